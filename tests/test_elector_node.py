"""Node processes on loopback: every one of them leaves promptly on SIGTERM, leader or follower; a leaving
node's voter promises nothing more."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from elector import cluster as cluster_file
from elector.cluster import Timing
from elector.core import Campaign, Promise
from elector.node.runtime import Node
from fencekeeper.processes import NodeProcess, free_base_port


@pytest.mark.slow
async def test_sigterm_stops_followers_and_the_leader_promptly(tmp_path) -> None:
    # A follower used to stay up for minutes after SIGTERM: asyncio.wait_for (Python 3.11) swallowed the
    # cancellation of its timer loop when `stop` set the wake-up event just before cancelling it, and
    # the leader's renewals kept its connections busy through aiohttp's graceful shutdown.
    cluster = cluster_file.init(tmp_path / "c", 3, base_port=free_base_port(3), timing=Timing.for_lease(500))
    nodes = {
        m.id: NodeProcess(
            m.id,
            [
                sys.executable,
                "-m",
                "fencekeeper",
                "node",
                "run",
                "--cluster",
                str(cluster.path),
                "--id",
                m.id,
                "--data-dir",
                str(tmp_path / m.id),
                "--group",
                "orders",
                "--log-file",
                str(tmp_path / f"{m.id}.log"),
            ],
            m.url,
            tmp_path / f"{m.id}.log",
            tmp_path / f"{m.id}.err",
        )
        for m in cluster.members
    }
    try:
        for node in nodes.values():
            node.spawn()
        for node in nodes.values():
            await node.wait_serving()
        for _ in range(200):
            leaders = [n for n in nodes.values() if n.events("became_leader")]
            if leaders:
                break
            await asyncio.sleep(0.05)
        [leader] = leaders
        await asyncio.sleep(1.5)  # renewals flowing: the followers' loops wake on every one
        for node in [*(n for n in nodes.values() if n is not leader), leader]:
            node.signal(signal.SIGTERM)
            assert node.proc is not None
            try:
                code = await asyncio.to_thread(node.proc.wait, 5)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"{node.id} ({'leader' if node is leader else 'follower'}) ignored SIGTERM for 5 s"
                )
            assert code == 0, node.err_file.read_text()[-2000:]
    finally:
        for node in nodes.values():
            node.kill()


async def test_a_leaving_node_promises_nothing_even_in_a_response(tmp_path) -> None:
    # After a handover the successor's campaign reached the old leader in the response to its release,
    # and its voter fsynced a promise while the new leader's fence committed on the same disk.
    cluster = cluster_file.init(tmp_path / "c", 3, base_port=free_base_port(3))
    node = Node(cluster, "n1", ["orders"], str(tmp_path / "n1"))
    await node.start()
    try:
        node.stopping = True
        assert await node.receive("n2", [Campaign("orders", 5, "n2", 1)], answers=True) == []
        assert node.store.load().get("orders", Promise()) == Promise()
    finally:
        node.stopping = False  # so that `stop` runs its cleanup
        await node.stop(release=False)
