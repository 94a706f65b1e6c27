"""The candidate: wins an epoch from a majority of voters, believes in its lease only as long as is safe.

* It campaigns with the next epoch above any it has seen. Campaigns are timed by what the voters say: a
  refusal carries the time left on the lease that blocks it, and the voter pushes `LeaseEnded` when that
  lease ends, so candidates campaign at that moment (plus a little seeded jitter so that they do not
  duel), not on a polling period.
* On grants from a majority it leads, and believes in its lease only until
  `start_of_round + lease × (1 − max_drift) − margin`: the round started before any voter started its own
  timer, so every granting voter's lease outlasts that belief even if this clock runs fast by max_drift.
* It renews every `renew_ms`; each majority renewal moves the deadline. It steps down the moment the
  deadline passes, when voters show it another holder's lease at a higher epoch, when the storage fences
  it out, or on release.
* A voter that promised a higher epoch to a campaign that holds no lease there will never renew the
  leader's epoch: the leader moves to a fresh epoch above it, asking every voter by the usual rule, so
  that it keeps as many voters as it reaches (a new fencing token, `EpochMoved`).
* On release it names a successor and asks it to campaign at once (`TakeOver`); the successor wins by
  the voters' usual rules, so this changes who campaigns first, never who may be granted what.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from elector.core._messages import (
    BecameLeader,
    Campaign,
    CampaignFailed,
    CampaignStarted,
    EpochMoved,
    Grant,
    LeaseEnded,
    LeaseExtended,
    Message,
    Output,
    Refuse,
    RefuseReason,
    Release,
    Renew,
    Renewed,
    Role,
    Send,
    SteppedDown,
    TakeOver,
)
from elector.core._quorum import cannot_reach, majority

_RETRY_SLACK_MS = 1.0
_MAX_OUTBID_RETRIES = 2
_TURN_JITTER_MS = 1.0


class Rng(Protocol):
    """What the candidate needs of its (injected, seeded) random source: `random.Random` has it."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class CandidateTiming:
    lease_ms: float
    renew_ms: float
    request_timeout_ms: float
    max_drift: float
    margin_ms: float

    @property
    def trusted_ms(self) -> float:
        """How long after a round's start the candidate may believe the lease that round won or renewed."""
        return self.lease_ms * (1 - self.max_drift) - self.margin_ms

    @property
    def slot_ms(self) -> float:
        """Turn length when candidates take turns to campaign: long enough for the first one's campaign to
        reach the next one's voter on a busy machine (a message can take ten milliseconds there, and more
        than a slot means a split vote, which costs a round timeout and a backoff), a small part of the
        lease. The turns after the first are taken only when the candidates before are down."""
        return max(10.0, self.request_timeout_ms / 5)

    @property
    def jitter_ms(self) -> float:
        """Spread of campaign start times among candidates reacting to the same event."""
        return max(1.0, min(self.request_timeout_ms, self.lease_ms / 20))


@dataclass
class _Round:
    number: int
    epoch: int
    started: float
    granted: dict[str, str]  # voter -> signature (campaign) or "" (renewal)
    refused: dict[str, Refuse]
    retry: dict[str, float] = field(default_factory=dict)  # voter -> when to ask it again
    recruited: set[str] = field(default_factory=set)  # voters a leader asked for its epoch this round
    ended: dict[str, str | None] = field(default_factory=dict)  # voter -> whose lease it said ended
    asked_again: set[str] = field(default_factory=set)  # voters asked again once that lease ended


class Candidate:
    def __init__(
        self,
        node_id: str,
        group: str,
        voters: Sequence[str],
        timing: CandidateTiming,
        rng: Rng,
        now: float,
    ) -> None:
        self.id = node_id
        self.group = group
        self.voters = tuple(voters)
        self.timing = timing
        self._rng = rng
        self.role = Role.FOLLOWER
        self.epoch = 0  # the epoch this candidate leads or last campaigned for
        self.highest_seen = 0
        self.deadline = float("-inf")  # while leading: the end of the trusted lease
        self.signatures: dict[str, str] = {}
        self._round: _Round | None = None
        self._rounds = 0
        self._next_renew = float("inf")
        self._failures = 0
        self._outbid_retries = 0
        self._released = False
        self._answered: frozenset[str] = frozenset()  # voters that made up the last majority round
        self._moving: int | None = None  # while leading: the fresh epoch its rounds ask for instead
        self._leader: str | None = None  # whose lease last refused a campaign above its epoch, till it ends
        # A fresh candidate campaigns soon, spread out so that a whole cluster starting at once does not duel.
        self._campaign_at: float | None = now + rng.uniform(0, timing.jitter_ms)

    # -- queries ------------------------------------------------------------------------------------------

    def is_leader(self, now: float) -> bool:
        return self.role is Role.LEADER and self._lease_trusted(now)

    def _lease_trusted(self, now: float) -> bool:
        return now < self.deadline

    def wake_at(self) -> float | None:
        """The next time `tick` has something to do."""
        times = []
        if self.role is Role.LEADER:
            if not self._lease_trusted(self.deadline):  # true here; false only in a broken variant
                times.append(self.deadline)
            if self._round is None:
                times.append(self._next_renew)
        if self._round is not None:
            times.append(self._round.started + self.timing.request_timeout_ms)
            times += self._round.retry.values()
        if self._campaign_at is not None and self.role is Role.FOLLOWER:
            times.append(self._campaign_at)
        return min(times) if times else None

    # -- inputs -------------------------------------------------------------------------------------------

    def tick(self, now: float) -> Output:
        out = Output()
        if self.role is Role.LEADER and not self._lease_trusted(now):
            self._step_down("lease_expired", now, out)
        if self._round is not None and now >= self._round.started + self.timing.request_timeout_ms:
            self._round_timed_out(now, out)
        if self._round is not None:
            self._send_retries(now, out)
        if self.role is Role.LEADER and now >= self._next_renew and self._round is None:
            self._start_round(now, out, renewal=True)
        if self.role is Role.FOLLOWER and self._campaign_at is not None and now >= self._campaign_at:
            self._start_round(now, out, renewal=False)
        return out

    def step(self, sender: str, message: Message, now: float) -> Output:
        out = Output()
        match message:
            case Grant() | Renewed() if self._answers_round(message):
                self._see(message.epoch)
                signature = message.signature if isinstance(message, Grant) else ""
                self._round.granted[sender] = signature  # type: ignore[union-attr]
                self._check_round(now, out)
            case Refuse() if self._answers_round(message):
                self._see(message.promised_epoch)
                self._note_leader(message)
                rnd = self._round
                assert rnd is not None
                retry_at = now + message.lease_remaining_ms + _RETRY_SLACK_MS
                if self.role is Role.CANDIDATE and self._ended_before(rnd, sender, message):
                    # That voter already said this lease ended: its refusal was overtaken. Ask again.
                    self._ask_again(rnd, sender, out)
                elif (
                    self.role is Role.CANDIDATE
                    and 0 < message.lease_remaining_ms
                    and retry_at < (rnd.started + self.timing.request_timeout_ms)
                ):
                    # The lease blocking us ends within this round (leases end a hair apart at different
                    # voters): ask that voter again then instead of losing the round to a duel.
                    rnd.retry[sender] = retry_at
                elif (
                    self.role is Role.CANDIDATE
                    and message.reason is RefuseReason.PROMISED
                    and message.lease_remaining_ms == 0
                    and self._outbid_retries < _MAX_OUTBID_RETRIES
                ):
                    # Outbid by a promise we had not heard of, with no lease in the way: this epoch cannot
                    # win there, but the next one can, now (not after the round's timeout).
                    self._outbid_retries += 1
                    self._campaign_lost(now, out, at=now)
                elif (
                    self.role is Role.LEADER
                    and message.reason is RefuseReason.NOT_HOLDER
                    and message.promised_epoch < self.epoch
                    and sender not in rnd.recruited
                ):
                    # A voter that never backed this epoch (it promised a lower one, to a rival of the
                    # election): ask it for this epoch now. It grants only by the usual rule, and no one
                    # else can hold this epoch, so it is safe; without it the leader renews on a bare
                    # majority, and one more failure deposes it.
                    rnd.recruited.add(sender)
                    out.messages.append(Send(sender, Campaign(self.group, self.epoch, self.id, rnd.number)))
                elif self.role is Role.LEADER and self._stale_promise(message):
                    self._move_above(message.promised_epoch)
                    rnd.refused[sender] = message
                    self._check_round(now, out)
                else:
                    rnd.refused[sender] = message
                    self._check_round(now, out)
            case Grant() if message.holder == self.id and self.role is not Role.LEADER:
                # A grant for a campaign already given up: it came after the refusals (or the timeout) that
                # lost it (the voter fsyncs its promise before granting, so its answer is often the last).
                # Give it back, as `_campaign_lost` does for the grants it saw, or that voter refuses every
                # other candidate until the lease ends. A leader gives nothing back: a late grant of a
                # round that moved it to a fresh epoch comes from a voter its lease may rest on.
                self._see(message.epoch)
                out.messages.append(Send(sender, Release(self.group, message.epoch, self.id, abandoned=True)))
            case Refuse():
                self._see(message.promised_epoch)
                # The answer of a round that a majority had already decided: usually the slowest voter's.
                if self.role is Role.LEADER and self._stale_promise(message):
                    self._move_above(message.promised_epoch)
            case LeaseEnded():
                self._see(message.epoch)
                if message.holder == self._leader:
                    self._leader = None
                if self.role is Role.CANDIDATE and self._round is not None:
                    self._lease_ended_in_round(self._round, sender, message, out)
                elif self.role is Role.FOLLOWER and not self._released and self._round is None:
                    self._campaign_at = now + self._stagger(message)
            case TakeOver():
                # The leader handed over to us: campaign now, not after the voters' LeaseEnded comes back.
                self._see(message.epoch)
                if self.role is Role.FOLLOWER and not self._released and self._round is None:
                    self._start_round(now, out, renewal=False)
            case _:
                pass
        return out

    def release(self, now: float) -> Output:
        """Give the lease back (graceful shutdown) and stop campaigning.

        A leader hands over to a successor it names in the `Release` and asks to campaign at once
        (`TakeOver`, sent after the `Release`: the successor's own voter then hears the lease end
        first). The voters pass the name on, and the other candidates stand aside for its round.
        """
        out = Output()
        self._released = True
        self._campaign_at = None
        if self.role is Role.LEADER:
            successor = self._successor()
            # Moving, it may hold either epoch at a voter; the voter ignores the one it did not promise.
            epochs = [self.epoch] if self._moving is None else [self.epoch, self._moving]
            out.messages += [
                Send(v, Release(self.group, e, self.id, successor=successor))
                for e in epochs
                for v in self.voters
            ]
            if successor is not None:
                out.messages.append(Send(successor, TakeOver(self.group, self.highest_seen, self.id)))
            self._step_down("released", now, out)
        elif self.role is Role.CANDIDATE:
            # Abandon the campaign (or `resume` would find a candidate with no round, waiting forever).
            assert self._round is not None
            self._give_back(self._round, out)
            self.role = Role.FOLLOWER
        self._round = None
        return out

    def _successor(self) -> str | None:
        """The first other member, in member order, among those that answered this leader's last round
        (up and reachable a moment ago); the first other member if none did."""
        others = [v for v in self.voters if v != self.id]
        answered = [v for v in others if v in self._answered]
        return (answered or others or [None])[0]

    def resume(self, now: float) -> Output:
        """Take part in elections again after `release`."""
        self._released = False
        self._campaign_at = now
        return self.tick(now)

    def fenced(self, current_epoch: int, now: float) -> Output:
        """The storage answered 409: its fence stands at `current_epoch`, above ours. Step down at once."""
        out = Output()
        self._see(current_epoch)
        if self.role is not Role.FOLLOWER and current_epoch > self.epoch:
            self._step_down("fenced", now, out)
        return out

    # -- rounds -------------------------------------------------------------------------------------------

    def _stagger(self, ended: LeaseEnded) -> float:
        """Delay before campaigning on LeaseEnded: every candidate hears it at once, so they take turns.

        The successor a releasing leader named campaigns on its `TakeOver`, which carries the epoch to
        campaign above; it waits a slot here only in case that message was lost. The others leave it a
        whole round. Then each takes a slot by its place among the voters other than the previous holder
        (gone, or handing over) and the successor, plus up to a millisecond of seeded jitter: the first
        campaign reaches the voters before the second starts, so votes rarely split. The order must be
        the same at every candidate, so it depends on nothing but the member list and the message.
        """
        if ended.successor == self.id:
            return self.timing.slot_ms
        wait = 0.0 if ended.successor is None else self.timing.request_timeout_ms
        order = [v for v in self.voters if v not in (ended.holder, ended.successor)]
        if self.id not in order:
            return wait + self._rng.uniform(0, self.timing.jitter_ms)
        rank = order.index(self.id)
        slot = self.timing.slot_ms
        return wait + rank * slot + self._rng.uniform(0, min(slot / 2, _TURN_JITTER_MS))

    def _ended_before(self, rnd: _Round, voter: str, refuse: Refuse) -> bool:
        """The voter refused for a lease it had already said ended, and was not asked again yet."""
        return (
            refuse.reason is RefuseReason.LEASE_LIVE
            and voter not in rnd.asked_again
            and voter in rnd.ended
            and rnd.ended[voter] == refuse.holder
        )

    def _lease_ended_in_round(self, rnd: _Round, voter: str, ended: LeaseEnded, out: Output) -> None:
        """A voter that refused this campaign for a lease says that lease ended: ask it again now.

        A successor's campaign can reach a voter before the old leader's release does. The refusal
        and the LeaseEnded travel separately, in either order; whichever comes second asks again.
        """
        refused = rnd.refused.get(voter)
        rnd.ended[voter] = ended.holder
        if refused is not None and self._ended_before(rnd, voter, refused):
            del rnd.refused[voter]
            self._ask_again(rnd, voter, out)

    def _ask_again(self, rnd: _Round, voter: str, out: Output) -> None:
        rnd.asked_again.add(voter)
        out.messages.append(Send(voter, Campaign(self.group, rnd.epoch, self.id, rnd.number)))

    def _stale_promise(self, refuse: Refuse) -> bool:
        """The voter refused this leader's epoch (or the one it is moving to) for a promise at or above it,
        to a campaign that holds no lease there (it failed, or was given up): it will never back that
        epoch, but it can grant a fresh one."""
        return (
            refuse.epoch in (self.epoch, self._moving)
            and refuse.promised_epoch >= refuse.epoch
            and refuse.holder is None
            and refuse.lease_remaining_ms == 0
        )

    def _move_above(self, promised: int) -> None:
        """From the next round on, ask every voter for a fresh epoch above every promise seen (unless the
        epoch it is moving to already is above this one: its voters then grant it again)."""
        if self._moving is None or self._moving <= promised:
            self._moving = self.highest_seen + 1

    def _note_leader(self, refuse: Refuse) -> None:
        """A live lease at an epoch below the one asked for belongs to a leader (not to a rival of this
        campaign): remember whose, until a voter says it ended. A leader that moves to a fresh epoch tells
        no follower, so the follower's next campaign may ask at or below that epoch and be refused for the
        same leader's lease at an epoch that looks like a rival's."""
        if (
            refuse.lease_remaining_ms > 0
            and refuse.holder not in (None, self.id)
            and refuse.promised_epoch < refuse.epoch
        ):
            self._leader = refuse.holder

    def _see(self, epoch: int) -> None:
        self.highest_seen = max(self.highest_seen, epoch)

    def _answers_round(self, message: Grant | Renewed | Refuse) -> bool:
        rnd = self._round
        return rnd is not None and message.round == rnd.number and message.epoch == rnd.epoch

    def _start_round(self, now: float, out: Output, *, renewal: bool) -> None:
        self._rounds += 1
        if renewal and self._moving is not None:
            # A leader moving to a fresh epoch: it renews by campaigning for it. Every voter that would
            # renew its epoch grants the fresh one (above its promise, its lease held by this leader),
            # so the round reaches no fewer voters than a renewal would.
            epoch = self._moving
            self._see(epoch)
            self._next_renew = now + self.timing.renew_ms
            out.messages += [Send(v, Campaign(self.group, epoch, self.id, self._rounds)) for v in self.voters]
        elif renewal:
            epoch = self.epoch
            self._next_renew = now + self.timing.renew_ms
            out.messages += [Send(v, Renew(self.group, epoch, self.id, self._rounds)) for v in self.voters]
        else:
            epoch = self.epoch = self.highest_seen = max(self.highest_seen, self.epoch) + 1
            self.role = Role.CANDIDATE
            self._campaign_at = None
            out.events.append(CampaignStarted(self.group, epoch))
            out.messages += [Send(v, Campaign(self.group, epoch, self.id, self._rounds)) for v in self.voters]
        self._round = _Round(self._rounds, epoch, now, {}, {})

    def _send_retries(self, now: float, out: Output) -> None:
        rnd = self._round
        assert rnd is not None
        for voter, at in sorted(rnd.retry.items()):
            if at <= now:
                del rnd.retry[voter]
                out.messages.append(Send(voter, Campaign(self.group, rnd.epoch, self.id, rnd.number)))

    def _check_round(self, now: float, out: Output) -> None:
        rnd = self._round
        assert rnd is not None
        n = len(self.voters)
        if len(rnd.granted) >= majority(n):
            deadline = rnd.started + self.timing.trusted_ms
            self._round = None
            self._answered = frozenset(rnd.granted)
            if self.role is Role.CANDIDATE:
                self.role = Role.LEADER
                self.deadline = deadline
                self.signatures = dict(rnd.granted)
                self._failures = 0
                self._next_renew = rnd.started + self.timing.renew_ms
                out.events.append(BecameLeader(self.group, self.epoch, dict(rnd.granted), deadline))
            elif rnd.epoch != self.epoch:
                # A majority granted the fresh epoch: a lease as a renewal would give, and a new token.
                previous, self.epoch, self._moving = self.epoch, rnd.epoch, None
                self.signatures = dict(rnd.granted)
                self.deadline = max(self.deadline, deadline)
                out.events.append(
                    EpochMoved(self.group, self.epoch, previous, dict(rnd.granted), self.deadline)
                )
            elif deadline > self.deadline:
                self.deadline = deadline
                out.events.append(LeaseExtended(self.group, self.epoch, deadline))
        elif cannot_reach(n, len(rnd.refused)):
            if self.role is Role.CANDIDATE:
                self._campaign_lost(now, out)
            elif any(
                r.promised_epoch > self.epoch and r.holder not in (None, self.id)
                for r in rnd.refused.values()
            ):
                # Voters enough to block every renewal back another holder at a newer epoch: leave now
                # rather than at the deadline (until which no one else can win a majority anyway). Mere
                # promises with no lease behind them are what moving to a fresh epoch is for.
                self._step_down("superseded", now, out)
            else:
                self._round = None  # a failed renewal: the deadline decides; the next renewal may succeed

    def _round_timed_out(self, now: float, out: Output) -> None:
        if self.role is Role.CANDIDATE:
            self._campaign_lost(now, out)
        else:
            self._round = None

    def _campaign_lost(self, now: float, out: Output, at: float | None = None) -> None:
        """Back to follower; retry `at`, or when the blocking leases end, or after a random backoff."""
        rnd = self._round
        assert rnd is not None
        self._round = None
        self.role = Role.FOLLOWER
        self._give_back(rnd, out)
        # A lease of an older epoch belongs to a leader: wait for it to end. A lease at our epoch or above
        # belongs to a rival campaigning at the same time (a split vote): back off at random instead;
        # unless it is the leader's, moved to a fresh epoch this candidate had not heard of (a random
        # backoff would end about as the lease does, and split the vote with the candidate the voters'
        # LeaseEnded sent first).
        blocked = sorted(
            r.lease_remaining_ms
            for r in rnd.refused.values()
            if r.lease_remaining_ms > 0
            and (r.promised_epoch < rnd.epoch or (r.holder is not None and r.holder == self._leader))
        )
        # Voters that answered and are not blocked by a lease are free now (a silent one may be down): wait
        # until enough of the blocked ones are free too. Counting the silent as free, a candidate whose own
        # voter granted it would back off at random and campaign into the moment the lease ends, splitting
        # the vote with the candidate the voters' LeaseEnded sent first.
        silent = len(self.voters) - len(rnd.granted) - len(rnd.refused)
        free = len(self.voters) - len(blocked) - silent
        need = majority(len(self.voters)) - free
        if at is not None:
            wait = at - now
        elif blocked and need > 0:
            # The voters push LeaseEnded when that lease ends; this later timer only covers a lost push.
            wait = blocked[min(need, len(blocked)) - 1] + self.timing.lease_ms / 2
            # Not a collision: the backoff counts split votes in a row only. (Counted here, a follower's
            # periodic campaigns against a healthy leader would make the first split vote after it is gone
            # back off for up to a whole lease.)
            self._failures = 0
        else:
            self._failures += 1
            backoff = min(self.timing.lease_ms, self.timing.request_timeout_ms * 2 ** min(self._failures, 6))
            wait = self._rng.uniform(0, backoff)
        if at is None:
            self._outbid_retries = 0
            wait += self._rng.uniform(0, self.timing.jitter_ms)
        self._campaign_at = now + wait
        out.events.append(CampaignFailed(self.group, rnd.epoch, self._campaign_at))

    def _give_back(self, rnd: _Round, out: Output) -> None:
        """Release a lost campaign's grants, or those voters would block every other candidate for a lease."""
        out.messages += [
            Send(v, Release(self.group, rnd.epoch, self.id, abandoned=True)) for v in sorted(rnd.granted)
        ]

    def _step_down(self, reason: str, now: float, out: Output) -> None:
        out.events.append(SteppedDown(self.group, self.epoch, reason))
        self.role = Role.FOLLOWER
        self.deadline = float("-inf")
        self.signatures = {}
        self._round = None
        self._moving = None
        self._next_renew = float("inf")
        if not self._released:
            # Another candidate is probably taking over; the voters will say when its lease ends.
            self._campaign_at = now + self.timing.lease_ms + self._rng.uniform(0, self.timing.jitter_ms)
