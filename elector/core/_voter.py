"""The voter: promises epochs durably and holds leases on its own monotonic clock.

Rules, per group:
* It grants a campaign for epoch e only if e is above every epoch it promised and no other holder's
  lease is live here. The promise is handed to the runtime to persist (fsync) *before* the grant is sent.
* It renews only for the holder of the epoch it promised last; a release ends the lease at once.
* After a (re)start it remembers promises but not lease timers, so for one full lease it grants nothing
  to a holder other than the one it promised last: a lease it granted before the crash may still be live.
* When a lease ends (expiry or release) it tells the candidates it refused meanwhile, so they campaign
  at that moment instead of polling; with the successor a releasing holder named, who campaigns first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from elector.core._messages import (
    Campaign,
    Grant,
    LeaseEnded,
    Message,
    Output,
    Promise,
    Refuse,
    RefuseReason,
    Release,
    Renew,
    Renewed,
    Send,
)

# sign(group, epoch, holder) -> signature; deterministic (Ed25519), so the core stays reproducible.
Signer = Callable[[str, int, str], str]


@dataclass
class _Lease:
    holder: str | None = None
    epoch: int = 0
    expires_at: float = float("-inf")
    waiters: set[str] = field(default_factory=set)  # candidates refused while the lease was live


class Voter:
    def __init__(
        self,
        voter_id: str,
        *,
        lease_ms: float,
        sign: Signer,
        promises: Mapping[str, Promise],
        now: float,
    ) -> None:
        """`promises` is what the store returned at start (empty on a new voter); `now` is the start time."""
        self.id = voter_id
        self.lease_ms = lease_ms
        self._sign = sign
        self._promises: dict[str, Promise] = dict(promises)
        self._leases: dict[str, _Lease] = {}
        # Lease timers are not persisted: for a lease after start, back no holder but the last promised,
        # in each group where this voter promised anything before (elsewhere no lease of its can be live).
        self._quiet_until = {group: now + lease_ms for group in self._promises}

    def promise(self, group: str) -> Promise:
        return self._promises.get(group, Promise())

    def promises(self) -> dict[str, Promise]:
        """Every group's promise: the whole durable state, for the runtime to write in one piece."""
        return dict(self._promises)

    def lease(self, group: str, now: float) -> tuple[str | None, int, float]:
        """(holder, epoch, remaining ms) of the lease this voter backs now; holder None when none is live."""
        lease = self._leases.get(group)
        if lease is None or lease.holder is None or lease.expires_at <= now:
            return None, self.promise(group).epoch, 0.0
        return lease.holder, lease.epoch, lease.expires_at - now

    def step(self, sender: str, message: Message, now: float) -> Output:
        match message:
            case Campaign():
                return self._campaign(sender, message, now)
            case Renew():
                return self._renew(sender, message, now)
            case Release():
                return self._release(message, now)
        return Output()  # answers to candidates are not for a voter

    def tick(self, now: float) -> Output:
        """Tell waiting candidates about leases (and the restart quiet period) that have ended."""
        out = Output()
        for group, lease in self._leases.items():
            if lease.waiters and self._blocking_until(group, lease) <= now:
                self._notify(group, lease, out)
        return out

    def wake_at(self) -> float | None:
        """When `tick` next has something to do (None: nothing pending)."""
        times = [self._blocking_until(g, lease) for g, lease in self._leases.items() if lease.waiters]
        return min(times) if times else None

    # -- rules ---------------------------------------------------------------------------------------------

    def _blocked_by_lease(self, lease: _Lease, candidate: str, now: float) -> bool:
        """Another holder's lease is live here: granting now could make two leaders."""
        return lease.expires_at > now and lease.holder not in (None, candidate)

    def _quiet(self, group: str, now: float) -> bool:
        return now < self._quiet_until.get(group, float("-inf"))

    def _blocking_until(self, group: str, lease: _Lease) -> float:
        return max(lease.expires_at, self._quiet_until.get(group, float("-inf")))

    def _refuse(
        self, sender: str, group: str, epoch: int, rnd: int, reason: RefuseReason, now: float
    ) -> Output:
        """Refuse, saying how long until this voter could grant `sender`: it then waits for LeaseEnded."""
        lease = self._leases.setdefault(group, _Lease())
        holder = lease.holder if lease.expires_at > now else None
        remaining = 0.0
        if holder not in (None, sender) or (self._quiet(group, now) and sender != self.promise(group).holder):
            remaining = self._blocking_until(group, lease) - now
            lease.waiters.add(sender)
        refuse = Refuse(group, epoch, self.id, rnd, reason, self.promise(group).epoch, holder, remaining)
        return Output(messages=[Send(sender, refuse)])

    def _campaign(self, sender: str, msg: Campaign, now: float) -> Output:
        promised = self.promise(msg.group)
        lease = self._leases.setdefault(msg.group, _Lease())
        repeat = msg.epoch == promised.epoch and msg.candidate == promised.holder
        if msg.epoch <= promised.epoch and not repeat:
            return self._refuse(sender, msg.group, msg.epoch, msg.round, RefuseReason.PROMISED, now)
        if self._blocked_by_lease(lease, msg.candidate, now):
            return self._refuse(sender, msg.group, msg.epoch, msg.round, RefuseReason.LEASE_LIVE, now)
        if self._quiet(msg.group, now) and msg.candidate != promised.holder:
            return self._refuse(sender, msg.group, msg.epoch, msg.round, RefuseReason.RESTARTING, now)
        out = Output()
        if not repeat:
            self._promises[msg.group] = Promise(msg.epoch, msg.candidate)
            out.persist[msg.group] = self._promises[msg.group]
        lease.holder, lease.epoch = msg.candidate, msg.epoch
        lease.expires_at = max(lease.expires_at, now + self.lease_ms)
        signature = self._sign(msg.group, msg.epoch, msg.candidate)
        out.messages.append(
            Send(sender, Grant(msg.group, msg.epoch, msg.candidate, self.id, msg.round, signature))
        )
        return out

    def _renew(self, sender: str, msg: Renew, now: float) -> Output:
        promised = self.promise(msg.group)
        if (msg.epoch, msg.holder) != (promised.epoch, promised.holder):
            return self._refuse(sender, msg.group, msg.epoch, msg.round, RefuseReason.NOT_HOLDER, now)
        lease = self._leases.setdefault(msg.group, _Lease())
        lease.holder, lease.epoch = msg.holder, msg.epoch
        lease.expires_at = max(lease.expires_at, now + self.lease_ms)
        return Output(messages=[Send(sender, Renewed(msg.group, msg.epoch, self.id, msg.round))])

    def _release(self, msg: Release, now: float) -> Output:
        lease = self._leases.get(msg.group)
        promised = self.promise(msg.group)
        if (
            lease is None
            or (msg.epoch, msg.holder) != (promised.epoch, promised.holder)
            or lease.holder is None
        ):
            return Output()
        lease.expires_at = min(lease.expires_at, now)
        out = Output()
        if msg.abandoned:
            lease.waiters.clear()  # rivals of a split vote: they retry on their own random backoff
        elif not self._quiet(msg.group, now):
            self._notify(msg.group, lease, out, msg.successor)
        lease.holder = None
        return out

    def _notify(self, group: str, lease: _Lease, out: Output, successor: str | None = None) -> None:
        ended = LeaseEnded(group, self.promise(group).epoch, self.id, lease.holder, successor)
        out.messages += [Send(waiter, ended) for waiter in sorted(lease.waiters)]
        lease.waiters.clear()
