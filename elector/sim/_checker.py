"""Invariants, checked as the world runs. A violation stops the run with a readable reason.

1. At most one holder is granted any (group, epoch) by a majority of voters.
2. The storage fence per group never goes down, and no write is accepted below an epoch accepted earlier.
3. The counter's accepted values are gap-free and duplicate-free (no lost update).
4. With clocks within the drift bound and no pauses, no two nodes believe they lead a group at the same
   instant; otherwise such overlaps are counted as split-brain events (and 1-3 must still hold).
5. Liveness: after the last fault heals, some node leads every group within three leases (in `_run`).

Each check runs where its subject can change: grants as they are sent, the storage as it accepts, and
beliefs whenever a node becomes leader (a belief can only start there; time and pauses only end beliefs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from elector.core import BecameLeader, Event, majority
from elector.sim._world import World


class Violation(Exception):
    def __init__(self, invariant: int, detail: str, at: float) -> None:
        super().__init__(f"invariant {invariant} violated at t={at:.3f} ms: {detail}")
        self.invariant = invariant
        self.detail = detail
        self.at = at

    def __reduce__(self) -> tuple:
        return (Violation, (self.invariant, self.detail, self.at))


@dataclass
class Checker:
    """`attach(world)`; `strict_lease` makes invariant 4 a violation instead of a counted event."""

    strict_lease: bool
    checks: int = 0
    split_brain_events: int = 0
    _grants: dict[tuple[str, int], dict[str, set[str]]] = field(default_factory=dict)
    _winners: dict[tuple[str, int], str] = field(default_factory=dict)
    _fences: dict[str, int] = field(default_factory=dict)
    _accepted_seen: int = 0
    _last_value: dict[str, int] = field(default_factory=dict)
    _max_epoch: dict[str, int] = field(default_factory=dict)

    def attach(self, world: World) -> None:
        world.checkers.append(self.after_step)
        world.observers.append(self.on_event)

    def after_step(self, world: World) -> None:
        if world.new_grants:
            self._quorum_grants(world)
        if world.storage is not None and len(world.storage.accepted) > self._accepted_seen:
            self._storage(world)

    def on_event(self, world: World, node: str, event: Event) -> None:
        if isinstance(event, BecameLeader):
            self._beliefs(world, event.group)

    def _quorum_grants(self, world: World) -> None:
        need = majority(len(world.voter_ids))
        for grant in world.new_grants:
            self.checks += 1
            key = (grant.group, grant.epoch)
            voters = self._grants.setdefault(key, {}).setdefault(grant.holder, set())
            voters.add(grant.voter)
            if len(voters) >= need:
                winner = self._winners.setdefault(key, grant.holder)
                if winner != grant.holder:
                    raise Violation(
                        1,
                        f"group {key[0]} epoch {key[1]} granted by a majority to {winner} and {grant.holder}",
                        world.now,
                    )
        world.new_grants.clear()

    def _storage(self, world: World) -> None:
        storage = world.storage
        assert storage is not None
        for group, fence in storage.fences.items():
            self.checks += 1
            if fence < self._fences.get(group, 0):
                raise Violation(2, f"fence of {group} went down to {fence}", world.now)
            self._fences[group] = fence
        for write in storage.accepted[self._accepted_seen :]:
            self.checks += 2
            highest = self._max_epoch.get(write.group, 0)
            if write.epoch < highest:
                detail = f"{write.writer} wrote {write.group} at epoch {write.epoch} after epoch {highest}"
                raise Violation(2, detail + " was accepted", world.now)
            self._max_epoch[write.group] = write.epoch
            expected = self._last_value.get(write.group, 0) + 1
            if write.value != expected:
                kind = "duplicate" if write.value < expected else "gap"
                raise Violation(
                    3,
                    f"lost update ({kind}): {write.writer} at epoch {write.epoch} wrote {write.value}, "
                    f"expected {expected}",
                    world.now,
                )
            self._last_value[write.group] = write.value
        self._accepted_seen = len(storage.accepted)

    def _beliefs(self, world: World, group: str) -> None:
        self.checks += 1
        believers = world.believers(group)
        if len(believers) <= 1:
            return
        if self.strict_lease:
            raise Violation(4, f"{believers} all believe they lead {group}", world.now)
        self.split_brain_events += 1
