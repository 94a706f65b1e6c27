"""The lab's scenarios and networks without processes: what a seed schedules, and the rules they make.

Every scenario runs here against a fake lab whose clock is virtual and whose leader rotates, so the
nemesis log it leaves is a pure function of the seed: `random` must replay its schedule from a seed.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from elector.node import runtime
from fencekeeper.cli import main
from fencekeeper.lab import netns
from fencekeeper.lab.nemesis import FIVE_NODES, NEEDS_PROXY, SCENARIOS, Nemesis, cycles, random_choices
from fencekeeper.lab.runner import Lab, LabConfig


class FakeProcess:
    def kill(self) -> None: ...
    def spawn(self) -> None: ...
    def signal(self, signum: int) -> None: ...
    async def wait_serving(self) -> None: ...
    async def start(self) -> None: ...


class FakeLink:
    def set(self, direction: str = "both", **faults: Any) -> None: ...
    def release(self, direction: str = "up") -> None: ...

    def trap(self, direction: str = "up") -> asyncio.Event:
        caught = asyncio.Event()
        caught.set()  # the next write leaves at once
        return caught


class FakeNet:
    def cut(self, pairs: Any) -> None: ...
    def drop(self, src: str, dsts: Any) -> None: ...
    def heal(self) -> None: ...


class FakeLab:
    """What the scenarios use of a Lab: virtual time, a leader that changes on every election."""

    def __init__(self, config: LabConfig, path: Path) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.node_ids = [f"n{i}" for i in range(1, config.nodes + 1)]
        self.lease_ms = config.lease_ms
        self.lease_s = config.lease_ms / 1000
        self.nemesis_every = config.nemesis_every
        self.clock_rates = {n: 1.0 for n in self.node_ids}
        self.nodes = {n: FakeProcess() for n in self.node_ids}
        self.storage = FakeProcess()
        self.storage_links = {n: FakeLink() for n in self.node_ids}
        self.net = FakeNet()
        self.pg = None
        self.nemesis = Nemesis(self, path)  # type: ignore[arg-type]
        self.now = 0.0
        self.ends_at = config.duration
        self.epoch = 0
        self.leader: tuple[str, int] | None = None

    def time_left(self) -> float:
        return self.ends_at - self.now

    async def sleep(self, seconds: float) -> bool:
        self.now += max(0.0, min(seconds, self.time_left()))
        await asyncio.sleep(0)
        return self.time_left() > 0

    async def wait_leader(self, above: int = 0) -> tuple[str, int] | None:
        if self.time_left() <= 0:
            return None
        self.epoch = max(self.epoch, above) + 1
        self.now += 0.1
        self.leader = (self.node_ids[self.epoch % len(self.node_ids)], self.epoch)
        return self.leader

    async def release(self, node: str) -> None: ...


async def schedule(tmp_path: Path, seed: int, nodes: int = 5, net: str = "proxy") -> list[tuple[str, str]]:
    """The (action, target) sequence `random` logs in 200 virtual seconds with this seed."""
    path = tmp_path / "nemesis.jsonl"
    path.unlink(missing_ok=True)
    lab = FakeLab(LabConfig("random", str(tmp_path), nodes=nodes, seed=seed, duration=200, net=net), path)
    while lab.time_left() > 0:
        await SCENARIOS["random"](lab, lab.nemesis)  # type: ignore[arg-type]
    return [(e["action"], e["target"]) for e in map(json.loads, path.read_text().splitlines())]


async def test_random_replays_its_schedule_from_the_seed(tmp_path: Path) -> None:
    first, again, other = [await schedule(tmp_path, s) for s in (7, 7, 8)]
    assert len(first) > 40
    assert first == again
    assert first != other
    actions = {a for a, _ in first}  # a long schedule draws from every shape of fault
    assert {"kill", "pause", "isolate", "halves", "majorities-ring", "bridge", "storage-kill"} <= actions


async def test_random_draws_only_what_the_cluster_and_network_can_do(tmp_path: Path) -> None:
    actions = {a for a, _ in await schedule(tmp_path, 3, nodes=3, net="netns")}
    assert not actions & {"majorities-ring", "bridge", "hold-storage", "slow-storage"}
    assert "clock-drift" not in random_choices(5, "proxy")
    assert not set(random_choices(3, "netns")) & (FIVE_NODES | NEEDS_PROXY)


def test_a_scenario_that_cannot_run_is_refused_with_the_reason() -> None:
    assert len(cycles("majorities-ring+bridge", 5, "proxy")) == 2
    for spec, nodes, net, why in [
        ("bridge", 3, "proxy", "needs --nodes 5"),
        ("delayed-write", 3, "netns", "only --net proxy"),
        ("halves+nope", 3, "proxy", "unknown scenario 'nope'"),
    ]:
        with pytest.raises(ValueError, match=why):
            cycles(spec, nodes, net)


def test_node_and_storage_ports_are_outside_the_ephemeral_range(tmp_path: Path) -> None:
    """A port the kernel can hand to a proxy listener or an outbound connection can be taken before the
    node binds it (the node then dies, and another node answers in its name)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        storage, nodes = Lab(LabConfig("halves", str(tmp_path), nodes=5)).listen_ports()
        assert max(storage, *nodes.values()) < low


def test_clock_drift_slows_n1_by_default_and_takes_explicit_rates(tmp_path: Path) -> None:
    assert Lab(LabConfig("clock-drift", str(tmp_path))).clock_rates == {"n1": 0.5, "n2": 1.0, "n3": 1.0}
    assert Lab(LabConfig("halves", str(tmp_path))).clock_rates == {"n1": 1.0, "n2": 1.0, "n3": 1.0}
    rates = Lab(LabConfig("clock-drift", str(tmp_path), clock_rate={"n3": 2.0})).clock_rates
    assert rates == {"n1": 1.0, "n2": 1.0, "n3": 2.0}


def test_netns_rules_drop_what_the_fault_says_at_both_ends() -> None:
    ips = {"n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13"}
    assert netns.drop_rules([("n1", "n2"), ("n1", "n3")], ips) == {
        "n1": ["-A OUTPUT -d 10.0.0.12 -j DROP", "-A OUTPUT -d 10.0.0.13 -j DROP"],
        "n2": ["-A INPUT -s 10.0.0.11 -j DROP"],
        "n3": ["-A INPUT -s 10.0.0.11 -j DROP"],
    }


def test_netns_where_unavailable_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert main(["lab", "run", "halves", "--net", "netns", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--net netns needs root" in err


def test_a_drifting_clock_runs_at_its_rate_from_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: now[0])
    slow, fast = runtime.drifting_clock(0.5), runtime.drifting_clock(2.0)
    now[0] += 3.0
    assert (slow(), fast(), runtime.monotonic_ms()) == (101_500.0, 106_000.0, 103_000.0)


def test_pg_temp_data_goes_where_postgres_can_reach_it() -> None:
    """As root PostgreSQL runs as `postgres`: a run folder inside a 0700 directory (pytest's) is out of its
    reach, so the lab falls back to a temp dir there; as another user every folder will do."""
    import os
    import pwd
    import shutil
    import tempfile

    from fencekeeper.pgtemp import postgres_can_reach

    root = Path(tempfile.mkdtemp(prefix="fk-reach-"))
    try:
        root.chmod(0o755)
        (root / "open").mkdir(mode=0o755)
        (root / "closed").mkdir(mode=0o700)
        as_root = os.geteuid() == 0
        try:
            pwd.getpwnam("postgres")
            postgres_user = True
        except KeyError:
            postgres_user = False
        assert postgres_can_reach(root / "open" / "postgres") is (not as_root or postgres_user)
        assert postgres_can_reach(root / "closed" / "postgres") is (not as_root)
    finally:
        shutil.rmtree(root)
