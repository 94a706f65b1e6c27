"""The fault model: what the network does to each message, and the nemesis's schedule of bigger faults.

Per message (elector links): loss, duplication, and delay with a heavy tail (which also reorders).
Node-to-storage links are TCP connections: FIFO, no duplication, but loss and long stalls (the
"delayed write" that arrives after a new leader fenced). The nemesis picks, by the seed, a schedule of
partitions (halves, isolate one, majority ring, bridge, one-way), crashes and restarts, pauses longer
than the lease, graceful handovers (a leader releases and names a successor), and clock drift within
the configured bound (or, in its own mode, beyond it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultConfig:
    loss: float = 0.10
    duplicate: float = 0.08
    slow: float = 0.25  # share of messages delayed by a heavy-tailed extra delay
    slow_scale_ms: float = 40.0  # Pareto scale of that extra delay
    base_latency_ms: tuple[float, float] = (0.3, 2.0)
    storage_stall: float = 0.01  # share of storage requests held back longer than a lease
    nemesis_every_ms: float = 800.0  # mean time between nemesis actions
    partitions: bool = True
    crashes: bool = True
    pauses: bool = True
    drift: bool = True
    releases: bool = True  # graceful handovers: a node gives back every lease it holds, rejoins later
    drift_beyond_bound: bool = False
    crash_after_persist: float = 0.02  # chance a voter dies between its fsync and its answer

    @classmethod
    def none(cls) -> FaultConfig:
        return cls(
            loss=0,
            duplicate=0,
            slow=0,
            storage_stall=0,
            partitions=False,
            crashes=False,
            pauses=False,
            drift=False,
            releases=False,
            crash_after_persist=0,
        )


@dataclass
class FaultCounts:
    lost: int = 0
    duplicated: int = 0
    delayed: int = 0
    stalled: int = 0
    partitions: int = 0
    crashes: int = 0
    crashes_after_persist: int = 0
    pauses: int = 0
    releases: int = 0
    drifts: int = 0
    partition_drops: int = 0  # messages lost to a cut link

    def total(self) -> int:
        return sum(vars(self).values())


@dataclass
class Network:
    """Decides, per message, when it arrives (possibly never, possibly twice)."""

    config: FaultConfig
    rng: random.Random
    counts: FaultCounts = field(default_factory=FaultCounts)

    def base(self) -> float:
        return self.rng.uniform(*self.config.base_latency_ms)

    def plan(self, *, fifo: bool, lease_ms: float) -> list[float]:
        """Delays (ms) after which copies of one message arrive: [] lost, [d] normal, [d1, d2] duplicated."""
        c = self.config
        r = self.rng.random()
        if r < c.loss:
            self.counts.lost += 1
            return []
        delay = self.base()
        if fifo and self.rng.random() < c.storage_stall:
            self.counts.stalled += 1
            return [delay + lease_ms * self.rng.uniform(1.2, 3.0)]
        if self.rng.random() < c.slow:
            self.counts.delayed += 1
            delay += min(c.slow_scale_ms * self.rng.paretovariate(1.5), 20 * lease_ms)
        if not fifo and self.rng.random() < c.duplicate:
            self.counts.duplicated += 1
            return [delay, delay + self.base() + self.rng.expovariate(1 / 20)]
        return [delay]
