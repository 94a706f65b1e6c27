"""Node processes on loopback: every one of them leaves promptly on SIGTERM, leader or follower; a leaving
node's voter promises nothing more."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest
from aiohttp import web

from elector import cluster as cluster_file
from elector.cluster import Cluster, Timing
from elector.core import Campaign, Output, Promise, Release, Voter
from elector.node import wire
from elector.node.runtime import Node, monotonic_ms
from elector.token import FencingToken, sign_grant
from fencekeeper.processes import NodeProcess, free_base_port, node_command


@pytest.mark.slow
async def test_sigterm_stops_followers_and_the_leader_promptly(tmp_path) -> None:
    # A follower used to stay up for minutes after SIGTERM: asyncio.wait_for (Python 3.11) swallowed the
    # cancellation of its timer loop when `stop` set the wake-up event just before cancelling it, and
    # the leader's renewals kept its connections busy through aiohttp's graceful shutdown.
    cluster = cluster_file.init(tmp_path / "c", 3, base_port=free_base_port(3), timing=Timing.for_lease(500))
    nodes = {
        m.id: NodeProcess(
            m.id,
            node_command(
                cluster.path, m.id, tmp_path / m.id, "orders", "--log-file", str(tmp_path / f"{m.id}.log")
            ),
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


class PeerVoter:
    """A peer that is nothing but the core's voter behind `/v1/peer`, which the test can take off the
    network (503) and step directly."""

    def __init__(self, cluster: Cluster, voter_id: str) -> None:
        key = cluster.private_key(voter_id)
        self.voter = Voter(
            voter_id,
            lease_ms=cluster.timing.lease_ms,
            sign=lambda g, e, h: sign_grant(key, cluster.id, g, e, h),
            promises={},
            now=monotonic_ms(),
        )
        self.up = True

    async def peer(self, request: web.Request) -> web.Response:
        if not self.up:
            return web.Response(status=503)
        body = await request.json()
        out = Output()
        for raw in body["messages"]:
            out.merge(self.voter.step(body["from"], wire.decode(raw), monotonic_ms()))
        replies = [wire.encode(s.message) for s in out.messages if s.to == body["from"]]
        return web.json_response({"messages": replies})


async def test_a_leader_moving_to_a_fresh_epoch_ends_the_old_lease_and_hands_out_the_new_token(
    tmp_path, aiohttp_server
) -> None:
    cluster = cluster_file.init(tmp_path / "c", 3, base_port=free_base_port(3), timing=Timing.for_lease(500))
    peers = {m.id: PeerVoter(cluster, m.id) for m in cluster.members[1:]}
    for m in cluster.members[1:]:
        app = web.Application()
        app.router.add_post("/v1/peer", peers[m.id].peer)
        await aiohttp_server(app, port=int(m.address.rsplit(":", 1)[1]))
    peers["n3"].up = False
    node = Node(cluster, "n1", ["orders"], str(tmp_path / "n1"))
    await node.start()
    try:
        first = await asyncio.wait_for(node.wait_for_leadership("orders"), 5)
        assert first.epoch == 1
        # Cut off, n3 granted a campaign above epoch 1 that then failed: it never renews epoch 1.
        stuck = peers["n3"].voter
        stuck.step("n2", Campaign("orders", 4, "n2", 1), monotonic_ms())
        stuck.step("n2", Release("orders", 4, "n2", abandoned=True), monotonic_ms())
        peers["n3"].up = True
        await asyncio.wait_for(first.lost.wait(), 5)
        moved = await asyncio.wait_for(node.wait_for_leadership("orders"), 1)
        token = FencingToken.decode(moved.token)
        assert (moved.epoch, token.epoch, token.holder) == (5, 5, "n1")
        assert len(token.signatures) >= 2 and not moved.lost.is_set()
        assert stuck.promise("orders") == Promise(5, "n1")
    finally:
        await node.stop(release=False)
