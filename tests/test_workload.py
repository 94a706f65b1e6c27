"""`fencekeeper workload`: the counter written through whichever node leads, tokens from the nodes' API.

One test in-process, where the test decides who leads and when a newer epoch fences the namespace (the
409 path, deterministic); one with real processes: three nodes, a quorum-verifying storage service and
the workload configured only by its environment, through a SIGKILL of the leader.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from elector import cluster as cluster_file
from elector.cluster import Timing
from elector.sidecar import RemoteLeader
from elector.workload import run_counter
from fencekeeper.processes import NodeProcess, StorageProcess, free_base_port, node_command
from storage_service.app import create_app
from storage_service.client import StorageClient
from storage_service.config import StorageConfig

GROUP = "orders"


def check_counter(history: list[dict[str, Any]]) -> None:
    """What a single writer following the leader must leave: epochs never go down, and the counter
    counts 1, 2, 3, ... (a write repeated or lost across a change of leader shows up here)."""
    assert history, "nothing was written"
    epochs = [h["epoch"] for h in history]
    assert epochs == sorted(epochs), f"an epoch went down: {epochs}"
    values = [int(base64.b64decode(h["value_base64"])) for h in history]
    assert values == list(range(1, len(values) + 1)), values


async def wait_until(predicate: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)


class FakeNode:
    """A node's token endpoint whose answers the test sets: the leader, an old leader that does not know
    it was deposed yet, or a follower (409)."""

    def __init__(self) -> None:
        self.epoch: int | None = None  # None: not the leader
        self.remaining_ms = 60_000.0

    async def token(self, request: web.Request) -> web.Response:
        if self.epoch is None:
            return web.json_response({"leader": None}, status=409)
        # Under --token-verify none the storage takes the epoch itself as the token.
        body = {"group": GROUP, "epoch": self.epoch, "token": str(self.epoch)}
        return web.json_response(body | {"lease_remaining_ms": self.remaining_ms})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/groups/{group}/token", self.token)
        return app


async def test_follows_the_leader_and_obeys_a_409_by_asking_again(tmp_path: Path, aiohttp_server) -> None:
    storage_server = await aiohttp_server(
        create_app(StorageConfig(db_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}"))
    )
    a, b = FakeNode(), FakeNode()
    servers = [await aiohttp_server(node.app()) for node in (a, b)]
    storage_url = str(storage_server.make_url("")).rstrip("/")
    a.epoch, a.remaining_ms = 3, 300.0  # its lease runs out 300 ms after each answer

    async with (
        aiohttp.ClientSession() as session,
        StorageClient(storage_url, session=session) as storage,
    ):
        leader = RemoteLeader([str(s.make_url("")) for s in servers], session, poll_s=0.01)
        task = asyncio.create_task(run_counter(leader, GROUP, storage_url, interval_ms=5))
        try:

            async def written_at(epoch: int) -> bool:
                return any(h["epoch"] == epoch for h in await storage.history(GROUP))

            await wait_until(lambda: written_at(3), "writes at epoch 3 through a")
            # a goes away and b leads: the workload moves over once a's lease ran out, without a 409.
            a.epoch, b.epoch = None, 4
            await wait_until(lambda: written_at(4), "writes at epoch 4 through b")
            assert await storage.rejections(GROUP) == []

            # A newer leader (elsewhere) fences the namespace at 5 while b still hands out epoch 4 with a
            # long lease: the next write is refused, and epoch 4 is never sent again.
            await storage.raise_fence(GROUP, 5)
            await wait_until(
                lambda: _has_rejection(storage), "the workload's write at epoch 4 refused", within=5
            )
            await asyncio.sleep(0.2)
            assert [(r["token_epoch"], r["current_epoch"]) for r in await storage.rejections(GROUP)] == [
                (4, 5)
            ]
            b.epoch = 5
            await wait_until(lambda: written_at(5), "writes at epoch 5 once b hands out 5")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        check_counter(await storage.history(GROUP, values=True))


async def _has_rejection(storage: StorageClient) -> bool:
    return bool(await storage.rejections(GROUP))


@pytest.mark.slow
async def test_the_workload_process_writes_through_whichever_node_leads(tmp_path: Path) -> None:
    base = free_base_port(3)
    cluster = cluster_file.init(tmp_path / "cluster", 3, base_port=base, timing=Timing.for_lease(1000))
    cluster_path = tmp_path / "cluster" / "cluster.toml"
    storage = StorageProcess(
        f"sqlite+aiosqlite:///{tmp_path / 'storage.db'}",
        tmp_path / "storage.log",
        extra_args=("--token-verify", "quorum", "--cluster", str(cluster_path)),
    )
    nodes = {
        m.id: NodeProcess(
            m.id,
            node_command(cluster_path, m.id, tmp_path / m.id, GROUP),
            m.url,
            tmp_path / f"{m.id}.log",
            tmp_path / f"{m.id}.err",
        )
        for m in cluster.members
    }
    env = os.environ | {
        "FENCEKEEPER_NODES": ",".join(m.url for m in cluster.members),
        "FENCEKEEPER_STORAGE": storage.url,
        "FENCEKEEPER_GROUPS": GROUP,
        "FENCEKEEPER_LOG_FILE": str(tmp_path / "workload.log"),
    }
    workload: asyncio.subprocess.Process | None = None
    try:
        for node in nodes.values():
            node.spawn()
        await storage.start()
        for node in nodes.values():
            await node.wait_serving()
        workload = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fencekeeper", "workload", env=env, stderr=asyncio.subprocess.PIPE
        )
        async with StorageClient(storage.url) as client:

            async def writes_after(epoch: int) -> list[dict[str, Any]]:
                return [h for h in await client.history(GROUP) if h["epoch"] > epoch]

            await wait_until(lambda: _nonempty(writes_after(0)), "the workload's first writes", within=10)
            first = (await client.history(GROUP))[-1]["epoch"]
            statuses = {n.id: await _status(n.url + f"/v1/groups/{GROUP}/token") for n in nodes.values()}
            [leader] = [node_id for node_id, status in statuses.items() if status == 200]
            nodes[leader].kill()
            await wait_until(lambda: _nonempty(writes_after(first)), "writes under the next leader")
            assert workload.returncode is None, "the workload exited"
            workload.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(workload.communicate(), 10)
            assert workload.returncode == 0, err.decode()
            history = await client.history(GROUP, values=True)
        check_counter(history)
        assert {h["writer"] for h in history} == {"workload"}
        assert history[-1]["epoch"] > first
    finally:
        if workload is not None and workload.returncode is None:
            workload.kill()
            await workload.wait()
        for node in nodes.values():
            node.kill()
        storage.kill()


async def _nonempty(items: Awaitable[list[Any]]) -> bool:
    return bool(await items)


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status
