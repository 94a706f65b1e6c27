"""Shared fixtures: a fresh database per test on SQLite and on the real PostgreSQL server.

PostgreSQL tests skip when no server answers on 127.0.0.1:5432, unless FENCEKEEPER_REQUIRE_POSTGRES=1
(set by .ci/run), which turns a missing server into a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage_service.app import create_app
from storage_service.config import StorageConfig

PG_HOST = os.environ.get("FENCEKEEPER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FENCEKEEPER_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("FENCEKEEPER_TEST_PG_USER", "postgres")
REQUIRE_PG = os.environ.get("FENCEKEEPER_REQUIRE_POSTGRES") == "1"


def postgres_available() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def _need_postgres() -> None:
    if postgres_available():
        return
    if REQUIRE_PG:
        pytest.fail(
            f"PostgreSQL is required (FENCEKEEPER_REQUIRE_POSTGRES=1) but {PG_HOST}:{PG_PORT} is down"
        )
    pytest.skip(f"no PostgreSQL on {PG_HOST}:{PG_PORT}")


class PostgresDatabases:
    """Creates throwaway databases on the shared server and drops them all at the end."""

    def __init__(self) -> None:
        self.created: list[str] = []

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")

    async def create(self) -> str:
        name = f"fk_test_{uuid.uuid4().hex[:12]}"
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    async def drop_all(self) -> None:
        if not self.created:
            return
        conn = await self._admin()
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def pg_databases() -> AsyncIterator[PostgresDatabases]:
    _need_postgres()
    databases = PostgresDatabases()
    yield databases
    await databases.drop_all()


@pytest.fixture
async def pg_url(pg_databases: PostgresDatabases) -> str:
    return await pg_databases.create()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fencekeeper.db'}"
        return
    _need_postgres()
    databases = PostgresDatabases()
    yield await databases.create()
    await databases.drop_all()


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(db_url: str, aiohttp_client) -> MakeClient:
    """An in-process client for a storage app on `db_url`; keyword arguments go to StorageConfig."""

    async def make(**settings) -> TestClient:
        return await aiohttp_client(create_app(StorageConfig(db_url=db_url, **settings)))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()
