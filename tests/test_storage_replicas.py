"""Two `storage serve` processes on one PostgreSQL database: the way to scale the storage tier.

They share nothing but the database, so the fence must live there and not in either process: raises sent
to each replica in turn and writes spread over both, raced, must pass the same checks as one service.
"""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import pytest
from racing import NS, check_race, history, race

from fencekeeper.processes import StorageProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def test_two_replicas_never_accept_a_write_out_of_epoch_order(tmp_path: Path, pg_url: str) -> None:
    # The first replica migrates; the second starts with --no-migrate, as in compose.yaml.
    first = StorageProcess(pg_url, tmp_path / "storage-1.log", extra_args=("--pool-size", "8"))
    second = StorageProcess(
        pg_url, tmp_path / "storage-2.log", extra_args=("--pool-size", "8", "--no-migrate")
    )
    async with first, second:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(first.url, timeout=timeout) as a,
            aiohttp.ClientSession(second.url, timeout=timeout) as b,
        ):
            ops = await race([a, b], random.Random(6), n_ops=1200, concurrency=48)
            items = await check_race(ops, a)
            # Either replica tells the same story: the database is the only state.
            assert await history(b) == items
            assert await (await a.get(NS)).json() == await (await b.get(NS)).json()
    # The refusals were logged by both processes, each for what it refused.
    for replica in (first, second):
        assert '"event": "write_rejected"' in replica.log_file.read_text()
