"""One seeded run: build a cluster from the seed, inject faults (safety phase), heal (liveness phase).

`run_seed(seed)` returns what happened; the same seed gives the same trace hash. `search` runs many.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field

from elector.core import BecameLeader, CandidateTiming
from elector.sim._checker import Checker, Violation
from elector.sim._faults import FaultConfig
from elector.sim._mutants import MUTANTS
from elector.sim._storage import STORAGE, StorageModel
from elector.sim._world import World

TIMING = CandidateTiming(lease_ms=1000, renew_ms=250, request_timeout_ms=100, max_drift=0.01, margin_ms=10)


@dataclass(frozen=True)
class SimConfig:
    voters: int | None = None  # None: 3 or 5, by the seed
    safety_ms: float = 12_000
    write_interval_ms: float = 20
    faults: FaultConfig = field(default_factory=FaultConfig)
    mutant: str | None = None
    timing: CandidateTiming = TIMING
    check: bool = True  # False only to measure what the checks cost (bench/sim.py)


@dataclass
class RunResult:
    seed: int
    events: int = 0
    faults: int = 0
    checks: int = 0
    split_brain_events: int = 0
    elections: int = 0
    writes_accepted: int = 0
    writes_rejected: int = 0
    strict_lease: bool = True
    violation: Violation | None = None
    trace: list[str] = field(default_factory=list)
    trace_hash: str = ""


class Nemesis:
    """The seed's schedule of big faults; each is undone after a while, and all are undone at the end."""

    def __init__(self, world: World, faults: FaultConfig, rng: random.Random, strict: bool, trace: list[str]):
        self.world, self.faults, self.rng, self.trace = world, faults, rng, trace
        self.strict = strict
        self.undo: list[tuple[float, str, str]] = []  # (at, kind, node)
        self.counts = world.network.counts
        kinds = [("partition", faults.partitions), ("crash", faults.crashes), ("drift", faults.drift)]
        kinds.append(("release", faults.releases))
        kinds.append(("pause", faults.pauses and not strict))
        self.kinds = [k for k, on in kinds if on]
        world.crash_listeners.append(self._crashed_after_persist)

    def _crashed_after_persist(self, node: str) -> None:
        self.undo.append((self.world.now + self.rng.uniform(0.1, 2.0) * TIMING.lease_ms, "restart", node))
        self.trace.append(f"{self.world.now:10.3f} nemesis crash {node} between its fsync and its answer")

    def act(self) -> None:
        w = self.world
        kind = self.rng.choice(self.kinds)
        nodes = sorted(w.nodes)
        if kind == "partition":
            self.counts.partitions += 1
            shape = self._partition(nodes)
            self.undo.append((w.now + self.rng.uniform(0.3, 3.0) * TIMING.lease_ms, "heal", ""))
            self.trace.append(f"{w.now:10.3f} nemesis partition {shape}")
        elif kind == "crash":
            victim = self.rng.choice([n for n in nodes if w.nodes[n].up] or nodes)
            if w.nodes[victim].up:
                self.counts.crashes += 1
                w.crash(victim)
                self.undo.append((w.now + self.rng.uniform(0.1, 3.0) * TIMING.lease_ms, "restart", victim))
                self.trace.append(f"{w.now:10.3f} nemesis crash {victim}")
        elif kind == "release":
            # Mostly a leader (the handover is what is interesting), sometimes anyone.
            leading = [n for n in nodes if any(n in w.leaders(g) for g in w.groups)]
            victim = self.rng.choice(leading if leading and self.rng.random() < 0.8 else nodes)
            if w.nodes[victim].up and not w.nodes[victim].paused and w.nodes[victim].candidates:
                self.counts.releases += 1
                w.release(victim)
                self.undo.append((w.now + self.rng.uniform(0.1, 2.0) * TIMING.lease_ms, "rejoin", victim))
                self.trace.append(f"{w.now:10.3f} nemesis release {victim}")
        elif kind == "pause":
            victim = self.rng.choice(nodes)
            if w.nodes[victim].up and not w.nodes[victim].paused:
                self.counts.pauses += 1
                w.pause(victim)
                self.undo.append((w.now + self.rng.uniform(1.2, 3.0) * TIMING.lease_ms, "resume", victim))
                self.trace.append(f"{w.now:10.3f} nemesis pause {victim}")
        else:
            victim = self.rng.choice(nodes)
            half = TIMING.max_drift / 2  # any two clocks then differ in rate by at most max_drift
            spread = half * 10 if self.faults.drift_beyond_bound else half
            rate = 1 + self.rng.uniform(-spread, spread)
            self.counts.drifts += 1
            w.set_clock_rate(victim, rate)
            self.trace.append(f"{w.now:10.3f} nemesis clock {victim} rate {rate:.4f}")

    def _partition(self, nodes: list[str]) -> str:
        w, rng = self.world, self.rng
        shuffled = rng.sample(nodes, len(nodes))
        shape = rng.choice(["halves", "isolate", "ring", "bridge", "one-way", "storage"])
        if shape == "halves":
            k = len(nodes) // 2
            w.partition(shuffled[:k], shuffled[k:])
        elif shape == "isolate":
            w.partition(shuffled[:1], shuffled[1:])
        elif shape == "ring":  # each node hears only its two ring neighbours
            n = len(shuffled)
            for i, a in enumerate(shuffled):
                for j, b in enumerate(shuffled):
                    if a != b and min((i - j) % n, (j - i) % n) > 1:
                        w.cut_link(a, b)
        elif shape == "bridge":  # two sides that only one node reaches both of
            rest = shuffled[1:]  # shuffled[0] is the bridge
            k = len(rest) // 2
            for a in rest[:k]:
                for b in rest[k:]:
                    w.cut_link(a, b)
                    w.cut_link(b, a)
        elif shape == "one-way":
            victim = shuffled[0]
            for other in shuffled[1:]:
                w.cut_link(victim, other)
        else:  # a node cut from the storage (but not from its peers)
            w.cut_link(shuffled[0], STORAGE)
            w.cut_link(STORAGE, shuffled[0])
        return f"{shape} {shuffled}"

    def due(self, now: float) -> None:
        for item in sorted(u for u in self.undo if u[0] <= now):
            self.undo.remove(item)
            self._undo(item[1], item[2])

    def _undo(self, kind: str, node: str) -> None:
        w = self.world
        if kind == "heal":
            w.heal()
        elif kind == "restart" and not w.nodes[node].up:
            w.restart(node)
        elif kind == "resume":
            w.resume(node)
        elif kind == "rejoin" and w.nodes[node].paused:
            self.undo.append((w.now + 0.1 * TIMING.lease_ms, "rejoin", node))  # frozen: not yet
            return
        elif kind == "rejoin":
            w.rejoin(node)
        self.trace.append(f"{w.now:10.3f} nemesis {kind} {node}".rstrip())

    def heal_all(self) -> None:
        # Rejoins last: a paused node must be resumed before it can campaign again.
        for _, kind, node in sorted(self.undo, key=lambda u: (u[1] == "rejoin", u)):
            self._undo(kind, node)
        self.undo.clear()
        self.world.heal()


def _event_line(at: float, node: str, event: object) -> str:
    return f"{at:10.3f} {node} {event!r}"


def run_seed(seed: int, config: SimConfig | None = None) -> RunResult:
    config = config or SimConfig()
    rng = random.Random(seed)
    voters = config.voters or rng.choice([3, 5])
    extra_candidates = rng.choice([0, 0, 1, 2])
    node_ids = [f"n{i}" for i in range(1, voters + 1)]
    candidates = rng.sample(node_ids, rng.randint(1, voters)) + [
        f"c{i}" for i in range(1, extra_candidates + 1)
    ]
    node_ids += [c for c in candidates if c.startswith("c")]
    groups = [f"g{i}" for i in range(1, rng.randint(1, 3) + 1)]
    # Half the seeds keep clocks within the bound and pause nothing: there the lease alone must prevent
    # overlap (invariant 4 is strict). The other half add pauses, or drift beyond the bound.
    strict = rng.random() < 0.5
    faults = config.faults
    if not strict and faults.pauses is False and not faults.drift_beyond_bound:
        strict = True
    mutant = MUTANTS[config.mutant] if config.mutant else None
    world = World(
        node_ids,
        groups,
        config.timing,
        rng,
        voter_ids=node_ids[:voters],
        candidate_ids=candidates,
        faults=faults,
        storage=StorageModel(fencing=mutant.storage_fencing if mutant else True),
        write_interval_ms=config.write_interval_ms,
        **(mutant.world_options() if mutant else {}),
    )
    result = RunResult(seed, strict_lease=strict)
    checker = Checker(strict_lease=strict)
    if config.check:
        checker.attach(world)
    digest = hashlib.blake2b(digest_size=16)

    def observe(w: World, node: str, event: object) -> None:
        line = _event_line(w.now, node, event)
        result.trace.append(line)
        digest.update(line.encode())
        if isinstance(event, BecameLeader):
            result.elections += 1

    world.observers.append(observe)
    result.trace.append(
        f"seed {seed}: voters {node_ids[:voters]}, candidates {candidates}, groups {groups}, "
        f"strict lease {strict}, mutant {config.mutant}"
    )
    nemesis = Nemesis(world, faults, random.Random(rng.random()), strict, result.trace)
    try:
        next_fault = rng.expovariate(1 / faults.nemesis_every_ms) if nemesis.kinds else float("inf")
        while world.now < config.safety_ms:
            until = min(config.safety_ms, next_fault, min((u[0] for u in nemesis.undo), default=float("inf")))
            world.run_until(until)
            nemesis.due(world.now)
            if world.now >= next_fault and world.now < config.safety_ms:
                nemesis.act()
                next_fault = world.now + rng.expovariate(1 / faults.nemesis_every_ms)
        world.faults = world.network.config = FaultConfig.none()  # liveness is owed once faults stop
        nemesis.heal_all()
        healed = world.now
        result.trace.append(f"{healed:10.3f} all faults healed; liveness phase")
        deadline = healed + 3 * config.timing.lease_ms
        led: set[str] = set()
        while world.step(deadline):
            led |= {g for g in groups if world.leaders(g)}
            if len(led) == len(groups):
                break
        if len(led) < len(groups):
            raise Violation(
                5, f"groups {sorted(set(groups) - led)} had no leader 3 leases after healing", world.now
            )
    except Violation as violation:
        result.violation = violation
        result.trace.append(f"{world.now:10.3f} VIOLATION {violation}")
    result.events = world.steps
    result.faults = world.network.counts.total()
    result.checks = checker.checks
    result.split_brain_events = checker.split_brain_events
    if world.storage is not None:
        result.writes_accepted = len(world.storage.accepted)
        result.writes_rejected = world.storage.rejected
    digest.update(repr(result.violation).encode())
    result.trace_hash = digest.hexdigest()
    return result


@dataclass
class SearchResult:
    runs: int = 0
    events: int = 0
    faults: int = 0
    checks: int = 0
    split_brain_events: int = 0
    elections: int = 0
    violations: list[RunResult] = field(default_factory=list)
    seconds: float = 0.0


def search(
    first_seed: int, runs: int, config: SimConfig | None = None, *, stop_at_first: bool = True
) -> SearchResult:
    total = SearchResult()
    started = time.perf_counter()
    for seed in range(first_seed, first_seed + runs):
        result = run_seed(seed, config)
        total.runs += 1
        total.events += result.events
        total.faults += result.faults
        total.checks += result.checks
        total.split_brain_events += result.split_brain_events
        total.elections += result.elections
        if result.violation is not None:
            total.violations.append(result)
            if stop_at_first:
                break
    total.seconds = time.perf_counter() - started
    return total
