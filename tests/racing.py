"""Raises and writes raced against the storage service, and the checks their outcome must pass.

Shared by tests/test_race.py (one service in-process) and tests/test_storage_replicas.py (two service
processes on one database): whatever the number of replicas, the fence lives in the database, so the
same properties must hold.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NAMESPACE = "race"
NS = f"/v1/namespaces/{NAMESPACE}"


@dataclass
class Op:
    kind: str  # "raise", "put" or "batch"
    epoch: int
    sent: float
    acked: float
    status: int
    body: dict


async def race(clients: Sequence[Any], rng: random.Random, n_ops: int, concurrency: int) -> list[Op]:
    """`n_ops` raises, puts and batches with epochs around the newest one, `concurrency` at a time.

    `clients` are aiohttp test clients or `ClientSession(base_url=...)`s, one per replica: raises go to
    each in turn, writes to one chosen at random.
    """
    issued = 1
    raises = 0
    gate = asyncio.Semaphore(concurrency)
    ops: list[Op] = []

    async def one(i: int) -> None:
        nonlocal issued, raises
        kind = rng.choices(["raise", "put", "batch"], weights=[1, 4, 1])[0]
        async with gate:
            # Epochs hover around the newest one handed out, so stale, current and higher tokens all race.
            if kind == "raise":
                epoch = issued + rng.choice([-1, 0, 1, 1, 1])
                issued = max(issued, epoch)
                client = clients[raises % len(clients)]
                raises += 1
            else:
                epoch = issued + rng.choice([0, 0, 0, 0, 0, 1, -1, -2])
                client = rng.choice(clients)
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


async def history(client: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await (await client.get(f"{NS}/history?after={after}&limit=1000")).json()
        if not page["items"]:
            return items
        items += page["items"]
        after = page["next_after"]


async def check_race(ops: list[Op], client: Any) -> list[dict[str, Any]]:
    """Assert that no stale write got through, reading the outcome through `client`; returns the history."""
    statuses = {op.status for op in ops}
    assert statuses <= {200, 409}, statuses
    accepted = [op for op in ops if op.status == 200]
    rejected = [op for op in ops if op.status == 409]
    raises = [op for op in accepted if op.kind == "raise"]
    # The race must really have happened: many raises, many writes, many refusals.
    print(f"{len(raises)} raises, {len(accepted) - len(raises)} writes accepted, {len(rejected)} refused")
    n = len(ops)
    assert len(raises) >= n / 15 and len(accepted) - len(raises) >= n / 7.5 and len(rejected) >= n / 30

    # Real time: once any operation with epoch E was acknowledged, nothing sent later is accepted below E.
    acked_by_time = sorted(accepted, key=lambda op: op.acked)
    for op in accepted:
        before = [a.epoch for a in acked_by_time if a.acked < op.sent]
        assert not before or op.epoch >= max(before), (op, max(before))

    # Every refusal was right when it was made: the fence it reports is above the token.
    for op in rejected:
        assert op.body["current_epoch"] > op.body["token_epoch"] == op.epoch

    # The database's own order: accepted writes in commit (seq) order never go down in epoch.
    items = await history(client)
    epochs = [item["epoch"] for item in items]
    assert epochs == sorted(epochs)
    writes_acked = sum(1 if op.kind == "put" else 3 for op in accepted if op.kind != "raise")
    assert len(items) == writes_acked

    info = await (await client.get(NS)).json()
    assert info["fence_epoch"] == max(op.epoch for op in accepted)
    assert info["rejected_writes"] == len(rejected)
    return items
