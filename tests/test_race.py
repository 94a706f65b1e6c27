"""Races raises and writes on PostgreSQL: no interleaving may let a write through below an accepted epoch."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import pytest

from storage_service.app import create_app
from storage_service.config import StorageConfig

pytestmark = pytest.mark.postgres
NS = "/v1/namespaces/race"


@dataclass
class Op:
    kind: str  # "raise", "put" or "batch"
    epoch: int
    sent: float
    acked: float
    status: int
    body: dict


async def _race(client, rng: random.Random, n_ops: int, concurrency: int) -> list[Op]:
    issued = 1
    gate = asyncio.Semaphore(concurrency)
    ops: list[Op] = []

    async def one(i: int) -> None:
        nonlocal issued
        kind = rng.choices(["raise", "put", "batch"], weights=[1, 4, 1])[0]
        async with gate:
            # Epochs hover around the newest one handed out, so stale, current and higher tokens all race.
            if kind == "raise":
                epoch = issued + rng.choice([-1, 0, 1, 1, 1])
                issued = max(issued, epoch)
            else:
                epoch = issued + rng.choice([0, 0, 0, 0, 0, 1, -1, -2])
            headers = {"Fencing-Token": str(epoch), "Fencing-Writer": f"w{i}"}
            sent = time.monotonic()
            if kind == "raise":
                resp = await client.post(f"{NS}/fence", headers=headers)
            elif kind == "put":
                resp = await client.put(f"{NS}/objects/k{i % 8}", data=str(i).encode(), headers=headers)
            else:
                batch = {
                    "operations": [{"op": "put", "key": f"b{i % 3}-{j}", "value": str(i)} for j in range(3)]
                }
                resp = await client.post(f"{NS}/batch", json=batch, headers=headers)
            body = await resp.json()
            acked = time.monotonic()
        ops.append(Op(kind, epoch, sent, acked, resp.status, body))

    await asyncio.gather(*(one(i) for i in range(n_ops)))
    return ops


async def test_hundreds_of_raises_and_writes_never_accept_a_stale_write(aiohttp_client, pg_url) -> None:
    client = await aiohttp_client(create_app(StorageConfig(db_url=pg_url, pool_size=16)))
    ops = await _race(client, random.Random(20261126), n_ops=1500, concurrency=48)

    statuses = {op.status for op in ops}
    assert statuses <= {200, 409}, statuses
    accepted = [op for op in ops if op.status == 200]
    rejected = [op for op in ops if op.status == 409]
    raises = [op for op in accepted if op.kind == "raise"]
    # The race must really have happened: many raises, many writes, many refusals.
    print(f"{len(raises)} raises, {len(accepted) - len(raises)} writes accepted, {len(rejected)} refused")
    assert len(raises) >= 100 and len(accepted) - len(raises) >= 200 and len(rejected) >= 50

    # Real time: once any operation with epoch E was acknowledged, nothing sent later is accepted below E.
    acked_by_time = sorted(accepted, key=lambda op: op.acked)
    for op in accepted:
        before = [a.epoch for a in acked_by_time if a.acked < op.sent]
        assert not before or op.epoch >= max(before), (op, max(before))

    # Every refusal was right when it was made: the fence it reports is above the token.
    for op in rejected:
        assert op.body["current_epoch"] > op.body["token_epoch"] == op.epoch

    # The database's own order: accepted writes in commit (seq) order never go down in epoch.
    history, after = [], 0
    while True:
        page = await (await client.get(f"{NS}/history?after={after}&limit=1000")).json()
        history += page["items"]
        if not page["items"]:
            break
        after = page["next_after"]
    epochs = [item["epoch"] for item in history]
    assert epochs == sorted(epochs)
    writes_acked = sum(1 if op.kind == "put" else 3 for op in accepted if op.kind != "raise")
    assert len(history) == writes_acked

    info = await (await client.get(NS)).json()
    assert info["fence_epoch"] == max(op.epoch for op in accepted)
    assert info["rejected_writes"] == len(rejected)
