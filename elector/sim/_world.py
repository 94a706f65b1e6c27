"""A deterministic world for the protocol core: virtual time, an in-memory network, crashes and pauses.

Everything that is not the protocol lives here: when messages arrive (or not), which clock each node
reads, what survives a crash. The nodes run the very `Voter` and `Candidate` the real runtime runs. One
seeded `random.Random` drives every choice, so a seed replays the same run.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from elector.core import (
    Campaign,
    Candidate,
    CandidateTiming,
    Event,
    Message,
    Output,
    Promise,
    Release,
    Renew,
    Voter,
)

VOTER_MESSAGES = (Campaign, Renew, Release)


@dataclass
class SimNode:
    """One elector node: a voter, a candidate per group, a disk, and a clock that may drift."""

    id: str
    disk: dict[str, Promise] = field(default_factory=dict)
    voter: Voter | None = None
    candidates: dict[str, Candidate] = field(default_factory=dict)
    up: bool = True
    paused: bool = False
    inbox: list[tuple[str, Message]] = field(default_factory=list)  # held while paused
    clock_rate: float = 1.0
    clock_offset: float = 0.0

    def local(self, now: float) -> float:
        return self.clock_offset + self.clock_rate * now

    def global_time(self, local: float) -> float:
        return (local - self.clock_offset) / self.clock_rate


@dataclass(frozen=True)
class Delivery:
    at: float
    seq: int
    src: str
    dst: str
    message: Message = field(compare=False)

    def __lt__(self, other: Delivery) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


Observer = Callable[["World", str, Event], None]


class World:
    def __init__(
        self,
        node_ids: Iterable[str],
        groups: Iterable[str],
        timing: CandidateTiming,
        rng: random.Random,
        *,
        voter_ids: Iterable[str] | None = None,
        latency_ms: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        self.timing = timing
        self.rng = rng
        self.latency_ms = latency_ms
        self.now = 0.0
        self.groups = tuple(groups)
        self.nodes = {node_id: SimNode(node_id) for node_id in node_ids}
        self.voter_ids = tuple(voter_ids if voter_ids is not None else self.nodes)
        self.cut: set[tuple[str, str]] = set()  # (src, dst) links that drop everything
        self.queue: list[Delivery] = []
        self._seq = 0
        self.observers: list[Observer] = []
        self.log: list[tuple[float, str, Event]] = []
        self.delivered = 0
        for node in self.nodes.values():
            self._boot(node)

    # -- node life ----------------------------------------------------------------------------------------

    def _sign(self, node_id: str) -> Callable[[str, int, str], str]:
        return lambda group, epoch, holder: f"{node_id}:{group}:{epoch}:{holder}"

    def _boot(self, node: SimNode) -> None:
        local = node.local(self.now)
        if node.id in self.voter_ids:
            node.voter = Voter(
                node.id,
                lease_ms=self.timing.lease_ms,
                sign=self._sign(node.id),
                promises=node.disk,
                now=local,
            )
        node.candidates = {
            group: Candidate(
                node.id, group, self.voter_ids, self.timing, random.Random(self.rng.random()), local
            )
            for group in self.groups
        }

    def crash(self, node_id: str) -> None:
        """Lose everything but the disk; messages in flight to the node are lost when they arrive."""
        node = self.nodes[node_id]
        node.up, node.paused, node.inbox = False, False, []
        node.voter, node.candidates = None, {}

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.up = True
        self._boot(node)

    def pause(self, node_id: str) -> None:
        """Stop the process (SIGSTOP, a long GC): no ticks, arriving messages wait in the socket buffer."""
        self.nodes[node_id].paused = True

    def resume(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.paused = False
        held, node.inbox = node.inbox, []
        for src, message in held:
            self._deliver(node, src, message)
        self._tick(node)

    # -- network ------------------------------------------------------------------------------------------

    def partition(self, *sides: Iterable[str]) -> None:
        """Cut every link between different sides (both directions)."""
        side_of = {node: i for i, side in enumerate(sides) for node in side}
        for a in self.nodes:
            for b in self.nodes:
                if a != b and side_of.get(a, -1) != side_of.get(b, -2):
                    self.cut.add((a, b))

    def cut_link(self, src: str, dst: str) -> None:
        self.cut.add((src, dst))

    def heal(self) -> None:
        self.cut.clear()

    def send(self, src: str, dst: str, message: Message, delay: float | None = None) -> None:
        if delay is None:
            delay = self.rng.uniform(*self.latency_ms)
        self._seq += 1
        heapq.heappush(self.queue, Delivery(self.now + delay, self._seq, src, dst, message))

    # -- running ------------------------------------------------------------------------------------------

    def _apply(self, node: SimNode, out: Output) -> None:
        node.disk.update(out.persist)  # persist before sending: the promise is on disk first
        for send in out.messages:
            if send.to == node.id:
                self.send(node.id, send.to, send.message, delay=0.0)
            else:
                self.send(node.id, send.to, send.message)
        for event in out.events:
            self.log.append((self.now, node.id, event))
            for observer in self.observers:
                observer(self, node.id, event)

    def _deliver(self, node: SimNode, src: str, message: Message) -> None:
        self.delivered += 1
        local = node.local(self.now)
        if isinstance(message, VOTER_MESSAGES):
            if node.voter is not None:
                self._apply(node, node.voter.step(src, message, local))
            return
        candidate = node.candidates.get(message.group)
        if candidate is not None:
            self._apply(node, candidate.step(src, message, local))

    def _tick(self, node: SimNode, at_least: float = float("-inf")) -> None:
        # `at_least`: the local wake time asked for, so that float rounding of a drifting clock cannot
        # leave a wake-up a hair early, doing nothing, forever.
        local = max(node.local(self.now), at_least)
        if node.voter is not None:
            self._apply(node, node.voter.tick(local))
        for candidate in node.candidates.values():
            self._apply(node, candidate.tick(local))

    def _wake(self, node: SimNode) -> tuple[float, float] | None:
        """(global, local) time of the node's next wake-up."""
        if not node.up or node.paused:
            return None
        times = [c.wake_at() for c in node.candidates.values()]
        if node.voter is not None:
            times.append(node.voter.wake_at())
        local = [t for t in times if t is not None]
        return (node.global_time(min(local)), min(local)) if local else None

    def step(self, until: float) -> bool:
        """Process the next delivery or wake-up at or before `until`; False when there is none."""
        wakes = [(t[0], t[1], node) for node in self.nodes.values() if (t := self._wake(node)) is not None]
        next_wake = min(wakes, key=lambda w: w[0]) if wakes else None
        next_delivery = self.queue[0].at if self.queue else None
        if next_delivery is not None and (next_wake is None or next_delivery <= next_wake[0]):
            if next_delivery > until:
                return False
            delivery = heapq.heappop(self.queue)
            self.now = max(self.now, delivery.at)
            node = self.nodes[delivery.dst]
            if not node.up or (delivery.src, delivery.dst) in self.cut:
                return True
            if node.paused:
                node.inbox.append((delivery.src, delivery.message))
                return True
            self._deliver(node, delivery.src, delivery.message)
            return True
        if next_wake is None or next_wake[0] > until:
            return False
        self.now = max(self.now, next_wake[0])
        self._tick(next_wake[2], at_least=next_wake[1])
        return True

    def run_until(self, until: float) -> None:
        while self.step(until):
            pass
        self.now = max(self.now, until)

    def run_for(self, ms: float) -> None:
        self.run_until(self.now + ms)

    # -- views --------------------------------------------------------------------------------------------

    def leaders(self, group: str) -> list[str]:
        """Nodes that believe, at this instant of their own clocks, that they lead `group`."""
        return [
            node.id
            for node in self.nodes.values()
            if node.up
            and not node.paused
            and group in node.candidates
            and node.candidates[group].is_leader(node.local(self.now))
        ]

    def believers(self, group: str) -> list[str]:
        """Like `leaders`, but a paused node counts too: it wakes up still believing it leads."""
        return [
            node.id
            for node in self.nodes.values()
            if node.up and group in node.candidates and node.candidates[group].is_leader(node.local(self.now))
        ]
