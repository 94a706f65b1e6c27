"""The elector's protocol core: pure state machines with no IO, no clock and no randomness of their own.

Inputs are messages and `now` (monotonic milliseconds); outputs are an `Output`: messages to send, promises
to persist (fsync them before sending), and events. The node runtime and the simulator are thin shells.
"""

from elector.core._candidate import Candidate, CandidateTiming
from elector.core._messages import (
    BecameLeader,
    Campaign,
    CampaignFailed,
    CampaignStarted,
    EpochMoved,
    Event,
    Grant,
    LeaseEnded,
    LeaseExtended,
    Message,
    Output,
    Promise,
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
from elector.core._voter import Signer, Voter

__all__ = [
    "BecameLeader",
    "Campaign",
    "CampaignFailed",
    "CampaignStarted",
    "Candidate",
    "CandidateTiming",
    "EpochMoved",
    "Event",
    "Grant",
    "LeaseEnded",
    "LeaseExtended",
    "Message",
    "Output",
    "Promise",
    "Refuse",
    "RefuseReason",
    "Release",
    "Renew",
    "Renewed",
    "Role",
    "Send",
    "Signer",
    "SteppedDown",
    "TakeOver",
    "Voter",
    "cannot_reach",
    "majority",
]
