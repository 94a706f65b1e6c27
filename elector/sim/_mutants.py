"""Deliberately broken variants: the proof that the simulator's invariants can fail.

Each mutant breaks one rule the safety argument rests on, through a seam of the real core (a method the
mutant overrides) or of the world; the seeded search must catch every one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elector.core import Candidate, Voter


class GrantsDuringLease(Voter):
    """Grants a higher epoch even while another holder's lease is live here."""

    def _blocked_by_lease(self, lease: Any, candidate: str, now: float) -> bool:
        return False


class IgnoresDeadline(Candidate):
    """Believes in its leadership until told otherwise: never steps down when its lease runs out."""

    def _lease_trusted(self, now: float) -> bool:
        return True


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    world_options: Callable[[], dict[str, Any]]
    storage_fencing: bool = True


MUTANTS = {
    m.name: m
    for m in [
        Mutant("no-persist", "voter does not persist its promise", lambda: {"persist": False}),
        Mutant(
            "grant-during-lease",
            "voter grants during a live lease",
            lambda: {"voter_factory": GrantsDuringLease},
        ),
        Mutant("no-fence", "storage without the fence check", dict, storage_fencing=False),
        Mutant(
            "ignore-deadline",
            "leader ignores its lease deadline",
            lambda: {"candidate_factory": IgnoresDeadline},
        ),
    ]
}
