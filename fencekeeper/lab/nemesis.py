"""The nemesis (the faults a lab run injects, each logged as a JSON line) and the scenarios built on it.

Why a log: the checker measures failover from each fault and the timeline shades each fault's interval,
so every action is one line of `nemesis.jsonl`: `at` (unix seconds), `action`, `target`, `phase`
(`start` of a fault, `end` of it, or `instant`) and `fault` (the id pairing a start with its end).

A scenario is one *cycle* (`async def cycle(lab, nemesis)`: wait for a leader, hurt it, heal, settle);
the runner repeats it until the run's duration is spent. Partitions go through `lab.net` (the proxy or
network namespaces, `fencekeeper/lab/network.py`); delays, held writes and traps need the proxy
(NEEDS_PROXY).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fencekeeper.lab.proxy import Link

if TYPE_CHECKING:
    from fencekeeper.lab.runner import Lab


class NeedsProxyError(RuntimeError):
    """The scenario uses a fault only the proxy can make (a delay, a held write, a trap)."""


class Nemesis:
    """Faults on the lab's processes and proxies; every call is logged before it acts."""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.lab = lab
        self.path = path
        self._ids = itertools.count(1)
        self.open: dict[int, tuple[str, str]] = {}
        self.last = ""

    def log(
        self, action: str, target: str, phase: str = "instant", fault: int | None = None, **extra: Any
    ) -> None:
        entry = {
            "at": time.time(),
            "action": action,
            "target": target,
            "phase": phase,
            "fault": fault,
            **extra,
        }
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.last = f"{action} {target}"

    def start(self, action: str, target: str, **extra: Any) -> int:
        fault = next(self._ids)
        self.open[fault] = (action, target)
        self.log(action, target, "start", fault, **extra)
        return fault

    def end(self, fault: int, action: str, **extra: Any) -> None:
        _, target = self.open.pop(fault, ("", ""))
        self.log(action, target, "end", fault, **extra)

    def _storage_link(self, node: str) -> Link:
        link = self.lab.storage_links.get(node)
        if link is None:
            raise NeedsProxyError("delaying or holding a node's writes to the storage needs --net proxy")
        return link

    # -- processes ----------------------------------------------------------------------------------------

    def kill(self, node: str) -> int:
        fault = self.start("kill", node)
        self.lab.nodes[node].kill()
        return fault

    async def restart(self, fault: int, node: str) -> None:
        self.end(fault, "restart")
        self.lab.nodes[node].spawn()
        await self.lab.nodes[node].wait_serving()

    def pause(self, node: str) -> int:
        fault = self.start("pause", node)
        self.lab.nodes[node].signal(signal.SIGSTOP)
        return fault

    async def pause_mid_write(self, node: str, within_s: float) -> int | None:
        """SIGSTOP `node` as its next request to the storage leaves it; that request is held at the proxy
        until `resume`. None if no request came within `within_s`.

        Why: the dangerous pause is the one between a leader's decision to write and the write reaching the
        storage. A SIGSTOP at a random moment nearly always lands while the process idles between writes,
        and on waking its timer notices the lost lease before it writes again.
        """
        link = self._storage_link(node)
        caught = link.trap("up")
        try:
            await asyncio.wait_for(caught.wait(), within_s)
        except TimeoutError:
            link.release("up")
            return None
        return self.pause(node)

    def resume(self, fault: int, node: str) -> None:
        """SIGCONT, then let through whatever `pause_mid_write` held: it arrives as if sent on waking."""
        self.end(fault, "resume")
        self.lab.nodes[node].signal(signal.SIGCONT)
        if node in self.lab.storage_links:
            self.lab.storage_links[node].release("up")

    async def stop_storage(self) -> int:
        """SIGKILL the storage service, and crash the lab's own PostgreSQL with it (`--db pg-temp`)."""
        pg = self.lab.pg
        fault = self.start("storage-kill", "storage", postgres=pg.pid if pg is not None else None)
        self.lab.storage.kill()
        if pg is not None:  # immediate: no shutdown checkpoint, WAL recovery at the next start
            await asyncio.to_thread(pg.stop, "immediate")
        return fault

    async def start_storage(self, fault: int) -> None:
        """PostgreSQL first (if the lab runs it), then the service; the log names the new postmaster."""
        pg = self.lab.pg
        if pg is not None:
            await asyncio.to_thread(pg.start)
        self.end(fault, "storage-start", postgres=pg.pid if pg is not None else None)
        await self.lab.storage.start()

    # -- the network --------------------------------------------------------------------------------------

    def cut(self, pairs: Iterable[tuple[str, str]], action: str = "partition", target: str = "") -> int:
        """Cut both directions of every link between each pair (a's requests to b and b's to a)."""
        pairs = list(pairs)
        fault = self.start(action, target or " ".join(f"{a}|{b}" for a, b in pairs))
        self.lab.net.cut(pairs)
        return fault

    def isolate(self, node: str) -> int:
        """`node` hears no peer and no peer hears it; the storage still does."""
        return self.cut([(node, other) for other in self.lab.node_ids if other != node], "isolate", node)

    def one_way(self, src: str, dsts: Iterable[str], action: str = "one-way-loss") -> int:
        """Everything `src` sends to `dsts` is lost (its requests, and its answers to their requests)."""
        dsts = list(dsts)
        fault = self.start(action, f"{src}->{','.join(dsts)}")
        self.lab.net.drop(src, dsts)
        return fault

    def hold_storage(self, node: str, ms: float) -> int:
        """Delay `node`'s requests to the storage by `ms`: its writes land late, after a newer fence."""
        link = self._storage_link(node)
        fault = self.start("hold-storage", node, hold_ms=ms)
        link.set("up", hold_ms=ms)
        return fault

    def slow_storage(self, node: str, ms: float, jitter_ms: float = 0.0) -> int:
        link = self._storage_link(node)
        fault = self.start("slow-storage", node, latency_ms=ms)
        link.set("up", latency_ms=ms, jitter_ms=jitter_ms)
        return fault

    def heal(self, *faults: int) -> None:
        """Every partition (and proxy fault) healed; the given faults end now."""
        self.lab.net.heal()
        for fault in faults:
            self.end(fault, "heal")


# -- scenarios (one cycle each) ----------------------------------------------------------------------------

Cycle = Callable[["Lab", Nemesis], Awaitable[None]]


async def _leader(lab: Lab, above: int = 0) -> str | None:
    """The current leader (of an epoch above `above`) once it has written for a moment; None when too little
    of the run is left for a fault to play out (two leases), so a run never ends on a fault cut short."""
    found = await lab.wait_leader(above)
    if found is None or not await lab.sleep(lab.lease_s) or lab.time_left() < 2 * lab.lease_s:
        return None
    return found[0]


async def leader_crash(lab: Lab, nem: Nemesis) -> None:
    """SIGKILL the leader; restart it three leases later."""
    if (leader := await _leader(lab)) is None:
        return
    fault = nem.kill(leader)
    await lab.sleep(3 * lab.lease_s)
    await nem.restart(fault, leader)
    await lab.sleep(2 * lab.lease_s)


async def leader_partition(lab: Lab, nem: Nemesis) -> None:
    """Cut the leader from every peer, both ways; it still reaches the storage. Heal three leases later.

    Its path to the storage is congested from the same moment (every request takes two leases to cross):
    with a pure partition the lease alone keeps the old and new leader apart in time, so the write the old
    leader sent while it still believed it led must be in flight when the majority elects and fences for
    the experiment to show what the fence is for.
    """
    if (leader := await _leader(lab)) is None:
        return
    slow = nem.slow_storage(leader, 2 * lab.lease_ms)
    fault = nem.isolate(leader)
    await lab.sleep(3 * lab.lease_s)
    nem.heal(fault, slow)
    await lab.sleep(2 * lab.lease_s)


async def leader_pause(lab: Lab, nem: Nemesis) -> None:
    """SIGSTOP the leader for two leases (a GC or VM stall) as a write leaves it, then SIGCONT: that write
    reaches the storage after a new leader raised the fence."""
    if (leader := await _leader(lab)) is None:
        return
    if (fault := await nem.pause_mid_write(leader, lab.lease_s)) is None:
        return
    await lab.sleep(2 * lab.lease_s)
    nem.resume(fault, leader)
    await lab.sleep(2 * lab.lease_s)


async def delayed_write(lab: Lab, nem: Nemesis) -> None:
    """Hold the leader's storage link for 2.5 leases, then cut it from its peers: its held write arrives
    at the storage after the new leader raised the fence."""
    if (leader := await _leader(lab)) is None:
        return
    hold = nem.hold_storage(leader, 2.5 * lab.lease_ms)
    await lab.sleep(0.05)
    fault = nem.isolate(leader)
    await lab.sleep(3 * lab.lease_s)
    nem.heal(fault, hold)
    await lab.sleep(2 * lab.lease_s)


async def asymmetric(lab: Lab, nem: Nemesis) -> None:
    """One-way loss: everything the leader sends to its peers is lost; it still hears them."""
    if (leader := await _leader(lab)) is None:
        return
    fault = nem.one_way(leader, [n for n in lab.node_ids if n != leader])
    await lab.sleep(3 * lab.lease_s)
    nem.heal(fault)
    await lab.sleep(2 * lab.lease_s)


def _sides(lab: Lab, minority: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in minority for b in lab.node_ids if b not in minority]


async def halves(lab: Lab, nem: Nemesis) -> None:
    """Split the cluster in two, the leader in the smaller half."""
    if (leader := await _leader(lab)) is None:
        return
    others = [n for n in lab.node_ids if n != leader]
    minority = [leader, *lab.rng.sample(others, (len(lab.node_ids) - 1) // 2 - 1)]
    fault = nem.cut(_sides(lab, minority), "halves", f"{','.join(minority)}|rest")
    await lab.sleep(3 * lab.lease_s)
    nem.heal(fault)
    await lab.sleep(2 * lab.lease_s)


async def majorities_ring(lab: Lab, nem: Nemesis) -> None:
    """Each node talks only to its two ring neighbours: every node sees a majority, no two agree.

    The leader and its neighbours are a majority; the two nodes cut from it see its lease run out and
    campaign. Whoever wins, a majority's leases keep any other from leading at the same time.
    """
    if await _leader(lab) is None:
        return
    ids = lab.node_ids
    ring = {(ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))}
    pairs = [
        (a, b) for i, a in enumerate(ids) for b in ids[i + 1 :] if (a, b) not in ring and (b, a) not in ring
    ]
    fault = nem.cut(pairs, "majorities-ring", "ring")
    await lab.sleep(4 * lab.lease_s)
    nem.heal(fault)
    await lab.sleep(2 * lab.lease_s)


async def bridge(lab: Lab, nem: Nemesis) -> None:
    """Two halves that only one node (the bridge) connects; the leader sits in one half.

    Each half with the bridge is a majority, and the bridge's voter backs one lease at a time: one leader,
    on whichever side, however long the cut lasts.
    """
    if (leader := await _leader(lab)) is None:
        return
    others = [n for n in lab.node_ids if n != leader]
    lab.rng.shuffle(others)
    half = len(lab.node_ids) // 2
    left = [leader, *others[: half - 1]]
    bridge_node, right = others[half - 1], others[half:]
    fault = nem.cut(
        [(a, b) for a in left for b in right], "bridge", f"{','.join(left)}|{bridge_node}|{','.join(right)}"
    )
    await lab.sleep(4 * lab.lease_s)
    nem.heal(fault)
    await lab.sleep(2 * lab.lease_s)


FLAPS = (1.5, 0.5, 1.5)  # how long each cut lasts, in leases


async def flapping(lab: Lab, nem: Nemesis) -> None:
    """Isolate whoever leads, heal half a lease later, again: cuts longer than the lease move leadership
    (the majority elects while the old leader's lease runs out), a shorter one the leader rides out."""
    if await _leader(lab) is None:
        return
    for leases in FLAPS:
        if (found := await lab.wait_leader()) is None:
            return
        fault = nem.isolate(found[0])
        await lab.sleep(leases * lab.lease_s)
        nem.heal(fault)
        await lab.sleep(lab.lease_s / 2)
    await lab.sleep(2 * lab.lease_s)


async def storage_restart(lab: Lab, nem: Nemesis) -> None:
    """SIGKILL the storage service (and crash PostgreSQL with `--db pg-temp`), start it again a lease
    later: writes fail meanwhile, then the leader fences again (the fence it finds is its own: it survived)
    and writes on."""
    if await _leader(lab) is None:
        return
    fault = await nem.stop_storage()
    await lab.sleep(lab.lease_s)
    await nem.start_storage(fault)
    await lab.sleep(2 * lab.lease_s)


DRIFT_RATE = 0.5  # clock-drift's default: n1's clock at half speed, fifty times the drift bound (1 %)


async def clock_drift(lab: Lab, nem: Nemesis) -> None:
    """The node with the slowest clock (`clock_rate`; n1 at DRIFT_RATE by default) is handed the lead,
    then cut from its peers. The voters' leases run out in real time and a new leader is elected while the
    slow node still trusts its lease (1 / rate times as long) and writes: the fence must refuse it."""
    slow = min(lab.node_ids, key=lambda n: lab.clock_rates[n])
    if await _leader(lab) is None:
        return
    while lab.leader is not None and lab.leader[0] != slow:  # released leaders campaign again a lease later
        nem.log("release", lab.leader[0])
        await lab.release(lab.leader[0])
        if await _leader(lab, above=lab.leader[1]) is None:
            return
    fault = nem.isolate(slow)
    await lab.sleep(3 * lab.lease_s)
    nem.heal(fault)
    await lab.sleep(2 * lab.lease_s)


SCENARIOS: dict[str, Cycle] = {
    "leader-crash": leader_crash,
    "leader-partition": leader_partition,
    "leader-pause": leader_pause,
    "delayed-write": delayed_write,
    "asymmetric": asymmetric,
    "halves": halves,
    "majorities-ring": majorities_ring,
    "bridge": bridge,
    "flapping": flapping,
    "storage-restart": storage_restart,
    "clock-drift": clock_drift,
}
FIVE_NODES = {"majorities-ring", "bridge"}
NEEDS_PROXY = {"leader-partition", "leader-pause", "delayed-write"}  # delays, held writes, traps
NOT_RANDOM = {"clock-drift"}  # a property of the run (its clocks), not a fault to draw


def random_choices(nodes: int, net: str) -> list[str]:
    """The scenarios `random` draws from on this cluster size and network."""
    return sorted(
        n
        for n in SCENARIOS
        if n not in NOT_RANDOM
        and (nodes >= 5 or n not in FIVE_NODES)
        and (net == "proxy" or n not in NEEDS_PROXY)
    )


async def random_faults(lab: Lab, nem: Nemesis) -> None:
    """One of the other scenarios at random (seeded: the same seed draws the same sequence), each cycle."""
    await SCENARIOS[lab.rng.choice(random_choices(len(lab.node_ids), lab.config.net))](lab, nem)
    if lab.nemesis_every:
        await lab.sleep(lab.nemesis_every)


SCENARIOS["random"] = random_faults


def cycles(spec: str, nodes: int, net: str) -> list[Cycle]:
    """The cycles of `spec`: a scenario, or several joined by `+` run in turn in one cluster
    (`majorities-ring+bridge`). ValueError, with a plain message, when one cannot run here."""
    names = spec.split("+")
    for name in names:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (one of {', '.join(sorted(SCENARIOS))})")
        if name in FIVE_NODES and nodes < 5:
            raise ValueError(f"{name} needs --nodes 5")
        if name in NEEDS_PROXY and net != "proxy":
            raise ValueError(f"{name} delays or holds writes in flight, which only --net proxy can do")
    return [SCENARIOS[name] for name in names]
