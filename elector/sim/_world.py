"""A deterministic world for the protocol core: virtual time, an in-memory network, crashes and pauses.

Everything that is not the protocol lives here: when messages arrive (or not), which clock each node
reads, what survives a crash, the storage and the workload that writes to it. The nodes run the very
`Voter` and `Candidate` the real runtime runs. One seeded `random.Random` drives every choice, so a seed
replays the same run.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from elector.core import (
    BecameLeader,
    Campaign,
    Candidate,
    CandidateTiming,
    EpochMoved,
    Event,
    Grant,
    Message,
    Output,
    Promise,
    Release,
    Renew,
    Role,
    SteppedDown,
    Voter,
)
from elector.sim._faults import FaultConfig, Network
from elector.sim._storage import STORAGE, StorageMessage, StorageModel, StorageReply, Workload

VOTER_MESSAGES = (Campaign, Renew, Release)
AnyMessage = Message | StorageMessage


@dataclass
class SimNode:
    """One elector node: a voter, a candidate and a workload per group, a disk, a clock that may drift."""

    id: str
    disk: dict[str, Promise] = field(default_factory=dict)
    voter: Voter | None = None
    candidates: dict[str, Candidate] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)
    up: bool = True
    paused: bool = False
    inbox: list[tuple[str, AnyMessage]] = field(default_factory=list)  # held while paused
    clock_rate: float = 1.0
    clock_offset: float = 0.0
    incarnation: int = 0  # bumped at each restart: answers meant for an earlier life go nowhere

    def local(self, now: float) -> float:
        return self.clock_offset + self.clock_rate * now

    def global_time(self, local: float) -> float:
        return (local - self.clock_offset) / self.clock_rate

    def set_rate(self, now: float, rate: float) -> None:
        """Change the clock's rate from `now` on, without a jump in its reading."""
        local = self.local(now)
        self.clock_rate = rate
        self.clock_offset = local - rate * now


# A message in flight: (arrival time, sequence number, source, destination, message); tuples keep the
# heap fast, and the sequence number makes equal times (and so the whole run) deterministic.
Delivery = tuple[float, int, str, str, Any]


# Observers see every event; checkers run after every step of the world (and may raise).
Observer = Callable[["World", str, Event], None]
Checker = Callable[["World"], None]
CandidateFactory = Callable[..., Candidate]
VoterFactory = Callable[..., Voter]


class World:
    def __init__(
        self,
        node_ids: Iterable[str],
        groups: Iterable[str],
        timing: CandidateTiming,
        rng: random.Random,
        *,
        voter_ids: Iterable[str] | None = None,
        candidate_ids: Iterable[str] | None = None,
        latency_ms: tuple[float, float] = (0.5, 2.0),
        faults: FaultConfig | None = None,
        storage: StorageModel | None = None,
        write_interval_ms: float | None = None,
        voter_factory: VoterFactory = Voter,
        candidate_factory: CandidateFactory = Candidate,
        persist: bool = True,
    ) -> None:
        self.timing = timing
        self.rng = rng
        faults = faults or FaultConfig.none()
        if faults == FaultConfig.none():
            faults = FaultConfig(**{**vars(faults), "base_latency_ms": latency_ms})
        self.faults = faults
        self.network = Network(faults, random.Random(rng.random()))
        self.now = 0.0
        self.groups = tuple(groups)
        self.nodes = {node_id: SimNode(node_id) for node_id in node_ids}
        self.voter_ids = tuple(voter_ids if voter_ids is not None else self.nodes)
        self.candidate_ids = tuple(candidate_ids if candidate_ids is not None else self.nodes)
        self.storage = storage
        self.write_interval_ms = write_interval_ms
        self._voter_factory = voter_factory
        self._candidate_factory = candidate_factory
        self._persist = persist  # False only for the mutant whose voter forgets to persist
        self.cut: set[tuple[str, str]] = set()  # (src, dst) links that drop everything
        self.queue: list[Delivery] = []
        self._fifo_last: dict[tuple[str, str], float] = {}
        self._wakes: dict[str, tuple[float, float]] = {}  # node -> (global, local) next wake-up
        self.new_grants: list[Grant] = []  # for the checker: grants sent since it last looked
        self._seq = 0
        self.observers: list[Observer] = []
        self.checkers: list[Checker] = []
        self.crash_listeners: list[Callable[[str], None]] = []  # told of crashes the world causes itself
        self.log: list[tuple[float, str, Event]] = []
        self.delivered = 0
        self.steps = 0
        for node in self.nodes.values():
            self._boot(node)
            self._refresh(node)

    # -- node life ----------------------------------------------------------------------------------------

    def _sign(self, node_id: str) -> Callable[[str, int, str], str]:
        return lambda group, epoch, holder: f"{node_id}:{group}:{epoch}:{holder}"

    def _boot(self, node: SimNode) -> None:
        local = node.local(self.now)
        if node.id in self.voter_ids:
            node.voter = self._voter_factory(
                node.id,
                lease_ms=self.timing.lease_ms,
                sign=self._sign(node.id),
                promises=node.disk,
                now=local,
            )
        if node.id not in self.candidate_ids:
            return
        node.candidates = {
            group: self._candidate_factory(
                node.id, group, self.voter_ids, self.timing, random.Random(self.rng.random()), local
            )
            for group in self.groups
        }
        if self.storage is not None and self.write_interval_ms is not None:
            # Request ids are unique across restarts: a reply to the previous life's request (its
            # connection died with it) must never be taken for an answer to this life's.
            node.workloads = {
                g: Workload(
                    node.id,
                    g,
                    self.write_interval_ms,
                    self.timing.request_timeout_ms * 2,
                    _req=node.incarnation << 32,
                )
                for g in self.groups
            }

    def crash(self, node_id: str) -> None:
        """Lose everything but the disk; messages in flight to the node are lost when they arrive."""
        node = self.nodes[node_id]
        node.up, node.paused, node.inbox = False, False, []
        node.voter, node.candidates, node.workloads = None, {}, {}
        self._refresh(node)

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.up = True
        node.incarnation += 1
        self._boot(node)
        self._refresh(node)

    def pause(self, node_id: str) -> None:
        """Stop the process (SIGSTOP, a long GC): no ticks, arriving messages wait in the socket buffer."""
        self.nodes[node_id].paused = True
        self._refresh(self.nodes[node_id])

    def resume(self, node_id: str) -> None:
        """Wake up. A write the workload was about to send when it froze goes out first, as after a GC."""
        node = self.nodes[node_id]
        if not node.up or not node.paused:
            return
        node.paused = False
        local = node.local(self.now)
        for workload in node.workloads.values():
            if workload.phase == "writing" and workload.waiting is None and workload.next_write is not None:
                workload.next_write = min(workload.next_write, local)
                self._send_storage(node, workload.tick(local, believes=True))
        held, node.inbox = node.inbox, []
        for src, message in held:
            self._deliver(node, src, message)
        self._tick(node)
        self._refresh(node)

    def release(self, node_id: str) -> None:
        """Graceful handover (SIGTERM's first act): every candidate of the node gives its lease back, a
        leader naming a successor, and campaigns no more until `rejoin`."""
        node = self.nodes[node_id]
        if not node.up or node.paused:
            return
        for candidate in node.candidates.values():
            self._apply(node, candidate.release(node.local(self.now)))
        self._refresh(node)

    def rejoin(self, node_id: str) -> None:
        """After `release`: the node's candidates take part in elections again, campaigning at once."""
        node = self.nodes[node_id]
        if not node.up or node.paused:
            return
        for candidate in node.candidates.values():
            self._apply(node, candidate.resume(node.local(self.now)))
        self._refresh(node)

    def set_clock_rate(self, node_id: str, rate: float) -> None:
        self.nodes[node_id].set_rate(self.now, rate)
        self._refresh(self.nodes[node_id])

    # -- network ------------------------------------------------------------------------------------------

    def partition(self, *sides: Iterable[str]) -> None:
        """Cut every link between different sides (both directions); the storage stays reachable."""
        side_of = {node: i for i, side in enumerate(sides) for node in side}
        for a in self.nodes:
            for b in self.nodes:
                if a != b and side_of.get(a, -1) != side_of.get(b, -2):
                    self.cut.add((a, b))

    def cut_link(self, src: str, dst: str) -> None:
        self.cut.add((src, dst))

    def heal(self) -> None:
        self.cut.clear()

    def send(self, src: str, dst: str, message: AnyMessage, delay: float | None = None) -> None:
        fifo = STORAGE in (src, dst)
        delays = [delay] if delay is not None else self.network.plan(fifo=fifo, lease_ms=self.timing.lease_ms)
        for d in delays:
            at = self.now + d
            if fifo:  # a TCP connection: nothing overtakes what was sent before it
                at = max(at, self._fifo_last.get((src, dst), 0.0))
                self._fifo_last[(src, dst)] = at
            self._seq += 1
            heapq.heappush(self.queue, (at, self._seq, src, dst, message))

    def _send_storage(self, node: SimNode, messages: list[StorageMessage]) -> None:
        for message in messages:
            self.send(node.id, STORAGE, message)

    # -- running ------------------------------------------------------------------------------------------

    def _apply(self, node: SimNode, out: Output) -> None:
        if out.persist and self._persist:
            node.disk.update(out.persist)  # persist before sending: the promise is on disk first
            if self.rng.random() < self.faults.crash_after_persist:
                self.network.counts.crashes_after_persist += 1
                self.crash(node.id)  # died between the fsync and the answer
                for listener in self.crash_listeners:
                    listener(node.id)
                return
        for send in out.messages:
            if isinstance(send.message, Grant):
                self.new_grants.append(send.message)
            self.send(node.id, send.to, send.message, delay=0.0 if send.to == node.id else None)
        for event in out.events:
            self.log.append((self.now, node.id, event))
            self._workload_event(node, event)
            for observer in self.observers:
                observer(self, node.id, event)

    def _workload_event(self, node: SimNode, event: Event) -> None:
        workload = node.workloads.get(getattr(event, "group", ""))
        if workload is None:
            return
        if isinstance(event, BecameLeader | EpochMoved):  # a new token: fence again, read again
            self._send_storage(node, workload.lead(event.epoch, node.local(self.now)))
        elif isinstance(event, SteppedDown):
            workload.stop()

    def _deliver(self, node: SimNode, src: str, message: AnyMessage) -> None:
        self.delivered += 1
        local = node.local(self.now)
        if isinstance(message, VOTER_MESSAGES):
            if node.voter is not None:
                self._apply(node, node.voter.step(src, message, local))
            return
        if isinstance(message, StorageReply):
            workload = node.workloads.get(message.group)
            if workload is not None:
                ok, more = workload.reply(message, local)
                self._send_storage(node, more)
                if not ok and message.group in node.candidates:
                    self._apply(node, node.candidates[message.group].fenced(message.fence, local))
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
        for group, candidate in list(node.candidates.items()):
            self._apply(node, candidate.tick(local))
            workload = node.workloads.get(group)
            if workload is not None and node.up:
                self._send_storage(node, workload.tick(local, believes=candidate.is_leader(local)))

    def _wake(self, node: SimNode) -> tuple[float, float] | None:
        """(global, local) time of the node's next wake-up."""
        if not node.up or node.paused:
            return None
        first = node.voter.wake_at() if node.voter is not None else None
        for timer in (*node.candidates.values(), *node.workloads.values()):
            t = timer.wake_at()
            if t is not None and (first is None or t < first):
                first = t
        return None if first is None else (node.global_time(first), first)

    def _refresh(self, node: SimNode) -> None:
        """Recompute a node's next wake-up; only what a node processes (or its clock) can change it."""
        wake = self._wake(node)
        if wake is None:
            self._wakes.pop(node.id, None)
        else:
            self._wakes[node.id] = wake

    def step(self, until: float) -> bool:
        """Process the next delivery or wake-up at or before `until`; False when there is none."""
        next_wake: tuple[float, float, SimNode] | None = None
        for node_id, wake in self._wakes.items():
            if next_wake is None or wake[0] < next_wake[0]:
                next_wake = (wake[0], wake[1], self.nodes[node_id])
        next_delivery = self.queue[0][0] if self.queue else None
        if next_delivery is not None and (next_wake is None or next_delivery <= next_wake[0]):
            if next_delivery > until:
                return False
            at, _, src, dst, message = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            self._route(src, dst, message)
            if dst in self.nodes:
                self._refresh(self.nodes[dst])
        else:
            if next_wake is None or next_wake[0] > until:
                return False
            self.now = max(self.now, next_wake[0])
            self._tick(next_wake[2], at_least=next_wake[1])
            self._refresh(next_wake[2])
        self._after_step()
        return True

    def _after_step(self) -> None:
        self.steps += 1
        for check in self.checkers:
            check(self)

    def _route(self, src: str, dst: str, message: Any) -> None:
        if (src, dst) in self.cut:
            self.network.counts.partition_drops += 1
            return
        if dst == STORAGE:
            if self.storage is not None:
                self.delivered += 1
                self.send(STORAGE, src, self.storage.handle(src, message, self.now))
            return
        node = self.nodes[dst]
        if not node.up:
            return
        if node.paused:
            node.inbox.append((src, message))
            return
        self._deliver(node, src, message)

    def run_until(self, until: float) -> None:
        while self.step(until):
            pass
        self.now = max(self.now, until)

    def run_for(self, ms: float) -> None:
        self.run_until(self.now + ms)

    # -- views --------------------------------------------------------------------------------------------

    def leaders(self, group: str) -> list[str]:
        """Nodes that believe, at this instant of their own clocks, that they lead `group` (and can act)."""
        return [
            node.id
            for node in self.nodes.values()
            if node.up
            and not node.paused
            and group in node.candidates
            and node.candidates[group].is_leader(node.local(self.now))
        ]

    def believers(self, group: str) -> list[str]:
        """Like `leaders`, but a paused leader counts too: frozen, it cannot notice that its lease ran out,
        and wakes up still believing it leads (what the storage fence is for)."""
        found = []
        for node in self.nodes.values():
            candidate = node.candidates.get(group)
            if not node.up or candidate is None:
                continue
            if candidate.is_leader(node.local(self.now)) or (node.paused and candidate.role is Role.LEADER):
                found.append(node.id)
        return found

    # -- manual control, for property tests that choose every step themselves ----------------------------

    def deliver_index(self, index: int) -> None:
        """Deliver the `index`-th message in flight now, whatever its arrival time (reordering)."""
        _, _, src, dst, message = self.queue.pop(index % len(self.queue))
        heapq.heapify(self.queue)
        self._route(src, dst, message)
        if dst in self.nodes:
            self._refresh(self.nodes[dst])
        self._after_step()

    def drop_index(self, index: int) -> None:
        self.queue.pop(index % len(self.queue))
        heapq.heapify(self.queue)

    def duplicate_index(self, index: int) -> None:
        at, _, src, dst, message = self.queue[index % len(self.queue)]
        self._seq += 1
        heapq.heappush(self.queue, (at, self._seq, src, dst, message))

    def advance_timers(self, until: float) -> None:
        """Let time pass to `until`, firing timers but delivering nothing (messages stay in flight)."""
        while True:
            due = [(w[0], w[1], self.nodes[n]) for n, w in self._wakes.items() if w[0] <= until]
            if not due:
                break
            at, local, node = min(due, key=lambda d: d[0])
            self.now = max(self.now, at)
            self._tick(node, at_least=local)
            self._refresh(node)
            self._after_step()
        self.now = max(self.now, until)
