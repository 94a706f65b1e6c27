"""The elector end to end: three `fencekeeper node run` processes, a quorum-verifying storage service on a
throwaway PostgreSQL database, the counter workload, and real signals (SIGKILL, SIGSTOP, SIGTERM).

Every test starts its own cluster on free loopback ports with a 1 s lease, and ends by checking the whole
storage history: epochs never go down and the counter has no gap and no repeat.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elector import cluster as cluster_file
from elector.token import FencingToken, sign_grant
from fencekeeper.lab.proxy import Link, ProxySet
from fencekeeper.processes import NodeProcess, StorageProcess, free_base_port, node_command
from storage_service.client import StaleTokenError, StorageClient, TokenRefusedError

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LEASE_MS = 1000
GROUP = "orders"
NODES = ("n1", "n2", "n3")


@dataclass
class Cluster:
    dir: Path
    cluster: cluster_file.Cluster
    storage: StorageProcess
    nodes: dict[str, NodeProcess]
    session: aiohttp.ClientSession
    client: StorageClient
    storage_links: dict[str, Link]  # each node reaches the storage through its own proxy link

    async def get(self, url: str) -> tuple[int, Any]:
        try:
            async with self.session.get(url) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return 0, repr(exc)

    async def start_node(self, node: NodeProcess) -> None:
        node.spawn()
        await self.wait_serving(node)

    async def wait_serving(self, node: NodeProcess, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert node.alive(), f"{node.id} exited: {node.err_file.read_text()[-2000:]}"
            status, _ = await self.get(node.url + "/healthz")
            if status == 200:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{node.id} did not serve within {within} s")

    async def views(self, exclude: set[str] = frozenset()) -> dict[str, Any]:
        live = [n for n in self.nodes.values() if n.id not in exclude]
        answers = await asyncio.gather(*(self.get(f"{n.url}/v1/groups/{GROUP}/leader") for n in live))
        return {n.id: body for n, (status, body) in zip(live, answers, strict=True) if status == 200}

    async def token(self, node_id: str) -> tuple[int, Any]:
        return await self.get(f"{self.nodes[node_id].url}/v1/groups/{GROUP}/token")

    async def wait_leader(
        self, *, exclude: set[str] = frozenset(), above: int = 0, within: float = 10.0, poll: float = 0.02
    ) -> tuple[str, int]:
        """The node (not in `exclude`) that says it leads at an epoch above `above`."""
        deadline = time.monotonic() + within
        views: dict[str, Any] = {}
        while time.monotonic() < deadline:
            views = await self.views(exclude)
            for node_id, view in views.items():
                if view["role"] == "leader" and view["epoch"] > above:
                    return node_id, view["epoch"]
            await asyncio.sleep(poll)
        raise AssertionError(f"no leader above epoch {above} within {within} s: {views}")

    async def wait_settled(self, within: float = 10.0) -> None:
        """Until every node names one leader at one epoch: every voter then backs the leader's epoch, so
        that it has no voter promised past it to move to a fresh epoch for (as it does at start-up, for
        the candidates that campaigned late: docs/protocol.md, candidate rule 7)."""
        deadline = time.monotonic() + within
        while True:
            views = await self.views()
            named = {(v["leader"], v["epoch"]) for v in views.values()}
            if len(views) == len(self.nodes) and len(named) == 1 and None not in next(iter(named)):
                return
            assert time.monotonic() < deadline, f"the nodes did not settle on one leader: {views}"
            await asyncio.sleep(0.02)

    async def fence(self) -> int | None:
        return (await self.client.namespace(GROUP))["fence_epoch"]

    async def wait_fence(self, epoch: int, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while (current := await self.fence()) != epoch:
            assert time.monotonic() < deadline, f"the fence stands at {current}, not {epoch}"
            await asyncio.sleep(0.02)

    async def wait_writes(self, epoch: int, count: int = 5, within: float = 5.0) -> list[dict[str, Any]]:
        """The history once it holds `count` accepted writes at `epoch`."""
        deadline = time.monotonic() + within
        while True:
            history = await self.client.history(GROUP)
            if sum(1 for h in history if h["epoch"] == epoch) >= count:
                return history
            assert time.monotonic() < deadline, f"fewer than {count} writes at epoch {epoch}: {history[-5:]}"
            await asyncio.sleep(0.05)

    async def check_history(self) -> list[dict[str, Any]]:
        """The safety properties over everything the storage accepted: epochs never go down, and each
        counter value is the previous one plus one (a lost or repeated increment shows up here)."""
        history = await self.client.history(GROUP, values=True)
        assert history, "the storage accepted no write at all"
        epochs = [h["epoch"] for h in history]
        assert epochs == sorted(epochs), f"an epoch went down: {epochs}"
        values = [int(base64.b64decode(h["value_base64"])) for h in history]
        bad = [
            (h["seq"], h["epoch"], v)
            for want, (h, v) in enumerate(zip(history, values, strict=True), 1)
            if v != want
        ]
        assert not bad, f"the counter skipped or repeated a value at (seq, epoch, value) {bad[:5]}"
        return history


async def _start_cluster(
    tmp_path: Path, pg_url: str, procs: list[Any], session: aiohttp.ClientSession, proxies: ProxySet
) -> Cluster:
    base = free_base_port(len(NODES))
    cluster_dir = tmp_path / "cluster"
    init = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            "-m",
            "fencekeeper",
            "cluster",
            "init",
            "--out",
            str(cluster_dir),
            "--nodes",
            str(len(NODES)),
            "--base-port",
            str(base),
            "--lease-ms",
            str(LEASE_MS),
        ],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await init.communicate()
    assert init.returncode == 0, err.decode()
    cluster_path = cluster_dir / "cluster.toml"
    cluster = cluster_file.load(cluster_path)
    storage = StorageProcess(
        pg_url,
        tmp_path / "storage.log",
        extra_args=("--token-verify", "quorum", "--cluster", str(cluster_path)),
    )
    procs.append(storage)
    nodes = {}
    links = {}
    for member in cluster.members:
        links[member.id] = await proxies.add(f"{member.id}->storage", ("127.0.0.1", storage.port))
        args = node_command(
            cluster_path, member.id, tmp_path / f"data-{member.id}", GROUP,
            "--storage", f"http://{links[member.id].address}",
            "--log-file", str(tmp_path / f"{member.id}.log"),
        )  # fmt: skip
        node = NodeProcess(
            member.id, args, member.url, tmp_path / f"{member.id}.log", tmp_path / f"{member.id}.err"
        )
        nodes[member.id] = node
        procs.append(node)
    client = StorageClient(storage.url, session=session)
    c = Cluster(tmp_path, cluster, storage, nodes, session, client, links)
    # The nodes take longest to start: spawn them first (their workloads retry until the storage serves).
    for node in nodes.values():
        node.spawn()
    await storage.start()
    for node in nodes.values():
        await c.wait_serving(node)
    await c.wait_settled()
    return c


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    procs: list[Any] = []

    def kill_all() -> None:  # runs even if the start fails half way
        for proc in procs:
            proc.kill()

    request.addfinalizer(kill_all)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
        ProxySet(seed=1) as proxies,
    ):
        yield await _start_cluster(tmp_path, pg_url, procs, session, proxies)


# -- tests -------------------------------------------------------------------------------------------------


async def test_exactly_one_leader_whose_writes_are_accepted(cluster: Cluster) -> None:
    leader, epoch = await cluster.wait_leader()
    # One node leads; a follower's voter backs its lease or (a voter that promised a higher epoch to a
    # candidate that lost) backs no one; none names another leader.
    deadline = time.monotonic() + 5
    while True:
        views = await cluster.views()
        if len(views) == 3 and all(v["leader"] in (leader, None) for v in views.values()):
            break
        assert time.monotonic() < deadline, f"the nodes disagree on the leader: {views}"
        await asyncio.sleep(0.02)
    assert [n for n, v in views.items() if v["role"] == "leader"] == [leader], views
    assert views[leader]["epoch"] == epoch
    assert sum(v["leader"] == leader for v in views.values()) >= 2, f"no majority backs {leader}: {views}"
    statuses = {n: (await cluster.token(n))[0] for n in NODES}
    assert statuses == {n: 200 if n == leader else 409 for n in NODES}

    first = await cluster.wait_writes(epoch)
    await asyncio.sleep(0.5)
    history = await cluster.client.history(GROUP)
    assert len(history) >= len(first) + 5, "the leader's writes stopped"
    # Only the leader wrote: at the epoch it was elected at, at those it moved to while settling, and
    # once settled only at its current one.
    led = {
        e["epoch"] for kind in ("became_leader", "epoch_moved") for e in cluster.nodes[leader].events(kind)
    }
    assert {h["writer"] for h in history} == {leader} and {h["epoch"] for h in history} <= led, (history, led)
    assert {(h["epoch"], h["writer"]) for h in history[len(first) :]} == {(epoch, leader)}
    assert await cluster.fence() == epoch
    await cluster.check_history()


async def test_sigkill_of_the_leader_elects_a_higher_epoch_that_fences_the_old_token(
    cluster: Cluster,
) -> None:
    leader, epoch = await cluster.wait_leader()
    status, body = await cluster.token(leader)
    assert status == 200
    old_token = body["token"]
    await cluster.wait_writes(epoch)

    killed_at = time.monotonic()
    cluster.nodes[leader].kill()
    new, new_epoch = await cluster.wait_leader(exclude={leader}, above=epoch, within=5 * LEASE_MS / 1000)
    elected_after = time.monotonic() - killed_at
    assert new != leader and new_epoch > epoch
    assert elected_after < 2 * LEASE_MS / 1000, f"failover took {elected_after:.3f} s"
    await cluster.wait_fence(new_epoch)
    await cluster.wait_writes(new_epoch)

    async with StorageClient(cluster.storage.url, writer=leader) as zombie:
        with pytest.raises(StaleTokenError) as refused:
            await zombie.put(GROUP, "counter", b"999999", old_token)
    assert refused.value.status == 409
    assert (refused.value.token_epoch, refused.value.current_epoch) == (epoch, new_epoch)
    rejections = await cluster.client.rejections(GROUP)
    assert any(
        (r["token_epoch"], r["current_epoch"], r["writer"], r["reason"])
        == (epoch, new_epoch, leader, "stale_epoch")
        for r in rejections
    ), rejections
    logged = [json.loads(line) for line in cluster.storage.log_file.read_text().splitlines()]
    assert any(
        e.get("event") == "write_rejected" and e.get("token_epoch") == epoch and e.get("writer") == leader
        for e in logged
    )
    history = await cluster.check_history()
    assert history[-1]["epoch"] == new_epoch and history[-1]["writer"] == new


async def test_a_paused_leader_is_fenced_out_when_it_wakes_up(cluster: Cluster) -> None:
    leader, epoch = await cluster.wait_leader()
    await cluster.wait_writes(epoch)
    node = cluster.nodes[leader]

    # Stopped as a write leaves it, that write held by its proxy link until it wakes: the pause that
    # matters falls between a leader's decision to write and the write reaching the storage. (A SIGSTOP
    # at a random moment lands while it idles between writes, and on waking its timer may notice the
    # lost lease before the next write: then there is nothing stale to refuse.)
    link = cluster.storage_links[leader]
    caught = link.trap("up")
    await asyncio.wait_for(caught.wait(), 2)
    node.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(3 * LEASE_MS / 1000)
        _, new_epoch = await cluster.wait_leader(exclude={leader}, above=epoch)
        await cluster.wait_fence(new_epoch)
        await cluster.wait_writes(new_epoch)
    finally:
        node.signal(signal.SIGCONT)
        link.release("up")

    # It wakes up believing it leads, its write goes out with the old token, and the fence refuses it.
    deadline = time.monotonic() + 5
    while True:
        rejections = await cluster.client.rejections(GROUP)
        mine = [r for r in rejections if r["writer"] == leader]
        if mine:
            break
        assert time.monotonic() < deadline, f"the woken leader's write was never refused: {rejections}"
        await asyncio.sleep(0.05)
    assert all((r["token_epoch"], r["reason"]) == (epoch, "stale_epoch") for r in mine), mine
    assert mine[0]["current_epoch"] >= new_epoch

    deadline = time.monotonic() + 5
    while not [e for e in node.events("stepped_down") if e["epoch"] == epoch]:
        assert time.monotonic() < deadline, "the woken leader never stepped down"
        await asyncio.sleep(0.05)
    [stepped] = [e for e in node.events("stepped_down") if e["epoch"] == epoch]
    assert stepped["reason"] in ("fenced", "lease_expired"), stepped
    assert (await cluster.token(leader))[0] == 409
    assert [e["value"] for e in node.events("write_rejected") if e["epoch"] == epoch]

    history = await cluster.check_history()
    raised = next(i for i, h in enumerate(history) if h["epoch"] == new_epoch)
    assert all(h["epoch"] >= new_epoch for h in history[raised:])


async def test_sigterm_hands_over_without_waiting_for_the_lease(cluster: Cluster) -> None:
    leader, epoch = await cluster.wait_leader()
    await cluster.wait_writes(epoch)

    started = time.monotonic()
    wall = time.time()
    cluster.nodes[leader].signal(signal.SIGTERM)
    _, new_epoch = await cluster.wait_leader(exclude={leader}, above=epoch, within=5, poll=0.002)
    handover = time.monotonic() - started
    assert handover < 0.5 * LEASE_MS / 1000, f"the handover took {handover * 1000:.0f} ms"

    history = await cluster.wait_writes(new_epoch, count=1)
    first = next(h for h in history if h["epoch"] == new_epoch)
    first_write = datetime.fromisoformat(first["at"]).timestamp() - wall
    print(
        f"SIGTERM -> new leader seen after {handover * 1000:.1f} ms, "
        f"its first write after {first_write * 1000:.1f} ms"
    )
    assert first_write < 0.5 * LEASE_MS / 1000

    proc = cluster.nodes[leader].proc
    assert proc is not None and proc.wait(10) == 0
    [stepped] = cluster.nodes[leader].events("stepped_down")
    assert (stepped["epoch"], stepped["reason"]) == (epoch, "released")
    await cluster.check_history()


async def test_a_restarted_voter_never_grants_below_its_promise(cluster: Cluster) -> None:
    leader, epoch = await cluster.wait_leader()
    await cluster.wait_writes(epoch)
    victim = next(n for n in NODES if n != leader)
    state = cluster.dir / f"data-{victim}" / "voter.json"
    promised = json.loads(state.read_text())["promises"][GROUP]
    assert promised["epoch"] >= epoch
    # Asked by the holder of its promise, a voter grants that epoch again (a repeated message); the rule
    # under test is about everyone else.
    other = next(n for n in NODES if n not in (victim, promised["holder"]))

    cluster.nodes[victim].kill()
    await cluster.start_node(cluster.nodes[victim])

    async def campaign(epoch: int) -> list[dict[str, Any]]:
        body = {
            "from": other,
            "messages": [
                {"type": "campaign", "group": GROUP, "epoch": epoch, "candidate": other, "round": 1}
            ],
        }
        async with cluster.session.post(cluster.nodes[victim].url + "/v1/peer", json=body) as resp:
            assert resp.status == 200
            return (await resp.json())["messages"]

    for lower in (promised["epoch"] - 1, promised["epoch"]):  # below the promise, and equal to it
        [answer] = await campaign(lower)
        assert answer["type"] == "refuse", answer
        assert (answer["epoch"], answer["reason"]) == (lower, "promised"), answer
        assert answer["promised_epoch"] >= promised["epoch"]
    after = json.loads(state.read_text())["promises"][GROUP]
    assert after["epoch"] >= promised["epoch"], f"the promise went back from {promised} to {after}"
    await cluster.check_history()


async def test_a_forged_token_is_refused_and_the_leader_keeps_writing(cluster: Cluster) -> None:
    leader, epoch = await cluster.wait_leader()
    await cluster.wait_writes(epoch)
    fence = await cluster.fence()
    mallory = Ed25519PrivateKey.generate()
    huge = 2**62
    forged = FencingToken(
        cluster.cluster.id,
        GROUP,
        huge,
        "mallory",
        {
            m.id: sign_grant(mallory, cluster.cluster.id, GROUP, huge, "mallory")
            for m in cluster.cluster.members
        },
    ).encode()
    async with StorageClient(cluster.storage.url, writer="mallory") as client:
        with pytest.raises(TokenRefusedError) as put:
            await client.put(GROUP, "counter", b"0", forged)
        with pytest.raises(TokenRefusedError) as raised:
            await client.raise_fence(GROUP, forged)
    for refused in (put.value, raised.value):
        assert (refused.status, refused.kind) == (403, "forged-token")
    assert await cluster.fence() == fence == epoch

    before = len(await cluster.client.history(GROUP))
    await asyncio.sleep(0.3)
    history = await cluster.client.history(GROUP)
    assert len(history) > before, "the leader stopped writing"
    assert {(h["epoch"], h["writer"]) for h in history[before:]} == {(epoch, leader)}
    rejections = await cluster.client.rejections(GROUP)
    assert {r["reason"] for r in rejections if r["writer"] == "mallory"} == {"forged_token"}
    await cluster.check_history()
