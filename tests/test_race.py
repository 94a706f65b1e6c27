"""Races raises and writes on PostgreSQL: no interleaving may let a write through below an accepted epoch."""

from __future__ import annotations

import random

import pytest
from racing import check_race, race

from storage_service.app import create_app
from storage_service.config import StorageConfig

pytestmark = pytest.mark.postgres


async def test_hundreds_of_raises_and_writes_never_accept_a_stale_write(aiohttp_client, pg_url) -> None:
    client = await aiohttp_client(create_app(StorageConfig(db_url=pg_url, pool_size=16)))
    ops = await race([client], random.Random(20261126), n_ops=1500, concurrency=48)
    await check_race(ops, client)
