"""Messages between candidates and voters, outputs and events: frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# -- candidate -> voter --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Campaign:
    """Asks a voter to promise `epoch` of `group` to `candidate` and start its lease."""

    group: str
    epoch: int
    candidate: str
    round: int


@dataclass(frozen=True, slots=True)
class Renew:
    group: str
    epoch: int
    holder: str
    round: int


@dataclass(frozen=True, slots=True)
class Release:
    """The holder gives the lease back: the voter ends it at once.

    `abandoned`: a campaign that lost gives back its grants. The voter then wakes no waiter: the other
    side of a split vote hears of it at the same moment, and both would campaign again together.
    `successor`: a leader handing over names the candidate it asked to take over (`TakeOver`); the voter
    passes the name on in `LeaseEnded`, so that the others stand aside for that candidate's round.
    """

    group: str
    epoch: int
    holder: str
    abandoned: bool = False
    successor: str | None = None


# -- candidate -> candidate ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TakeOver:
    """A leader handing over asks one candidate to campaign at once, above `epoch` (the highest it saw).

    It carries no authority: the successor wins votes only by the voters' usual rules.
    """

    group: str
    epoch: int
    holder: str


# -- voter -> candidate --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    group: str
    epoch: int
    holder: str
    voter: str
    round: int
    signature: str  # the voter's signature over (cluster, group, epoch, holder)


@dataclass(frozen=True, slots=True)
class Renewed:
    group: str
    epoch: int
    voter: str
    round: int


class RefuseReason(StrEnum):
    PROMISED = "promised"  # the voter promised this epoch or a higher one already
    LEASE_LIVE = "lease_live"  # another holder's lease is live at this voter
    RESTARTING = "restarting"  # the voter restarted less than a lease ago and grants no new holder yet
    NOT_HOLDER = "not_holder"  # a renewal for an epoch or holder the voter no longer backs


@dataclass(frozen=True, slots=True)
class Refuse:
    """A refused campaign or renewal, with what the candidate needs to try again at the right moment."""

    group: str
    epoch: int
    voter: str
    round: int
    reason: RefuseReason
    promised_epoch: int
    holder: str | None
    lease_remaining_ms: float


@dataclass(frozen=True, slots=True)
class LeaseEnded:
    """Pushed by a voter to the candidates it refused, when the lease they waited for ends."""

    group: str
    epoch: int
    voter: str
    holder: str | None  # whose lease ended: it is not expected to campaign first
    successor: str | None = None  # named by the holder that released it: it campaigns first


Message = Campaign | Renew | Release | TakeOver | Grant | Renewed | Refuse | LeaseEnded


# -- outputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: Message


@dataclass(frozen=True, slots=True)
class Promise:
    """A voter's durable state for one group: the highest epoch it promised, and to whom."""

    epoch: int = 0
    holder: str | None = None


class Role(StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class CampaignStarted:
    group: str
    epoch: int


@dataclass(frozen=True, slots=True)
class BecameLeader:
    group: str
    epoch: int
    signatures: dict[str, str]  # voter id -> signature: the fencing token's proof
    deadline: float  # this candidate's lease belief ends here (its own monotonic clock, ms)


@dataclass(frozen=True, slots=True)
class LeaseExtended:
    group: str
    epoch: int
    deadline: float


@dataclass(frozen=True, slots=True)
class EpochMoved:
    """A leader moved to a fresh epoch without losing its lease (it still leads): a new fencing token.

    Its writers raise the fence again with the new token and read again before they write on.
    """

    group: str
    epoch: int
    previous_epoch: int
    signatures: dict[str, str]
    deadline: float


@dataclass(frozen=True, slots=True)
class SteppedDown:
    group: str
    epoch: int
    reason: str  # lease_expired, superseded, released, fenced


@dataclass(frozen=True, slots=True)
class CampaignFailed:
    group: str
    epoch: int
    retry_at: float


Event = CampaignStarted | BecameLeader | LeaseExtended | EpochMoved | SteppedDown | CampaignFailed


@dataclass
class Output:
    """What one step asks of the runtime. Persist first (fsync), then send, then handle events."""

    messages: list[Send] = field(default_factory=list)
    persist: dict[str, Promise] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def merge(self, other: Output) -> Output:
        self.messages += other.messages
        self.persist |= other.persist
        self.events += other.events
        return self
