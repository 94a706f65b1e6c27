"""Alembic migrations on both databases: up, down, up again, and a schema that matches `db.metadata`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from fencekeeper.pgtemp import free_port
from storage_service import migrate
from storage_service.db import make_engine, metadata

TABLES = {"fences", "objects", "write_history", "rejected_writes"}
HEAD = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def schema_differences(engine: AsyncEngine) -> list:
    """What autogenerate would change to make the database match `metadata` (nothing, we hope)."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))


async def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await table_names(engine) == set()
        assert await migrate.current_revision(engine) is None

        await migrate.upgrade(engine)
        assert await table_names(engine) == TABLES | {"alembic_version"}
        assert await migrate.current_revision(engine) == HEAD
        assert await schema_differences(engine) == []
        await migrate.upgrade(engine)  # at head already: nothing to do, nothing breaks
        assert await migrate.current_revision(engine) == HEAD

        await migrate.downgrade(engine, "base")
        assert await table_names(engine) - {"alembic_version"} == set()
        assert await migrate.current_revision(engine) is None

        await migrate.upgrade(engine)
        assert await table_names(engine) == TABLES | {"alembic_version"}
        assert await migrate.current_revision(engine) == HEAD
        assert await schema_differences(engine) == []
    finally:
        await engine.dispose()


async def test_schema_check_sees_a_drift(db_url: str) -> None:
    """The comparison above can fail: a table missing from the database is reported."""
    engine = make_engine(db_url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE rejected_writes")
        differences = await schema_differences(engine)
        assert [diff[1].name for diff in differences if diff[0] == "add_table"] == ["rejected_writes"]
    finally:
        await engine.dispose()


def fencekeeper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fencekeeper", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
async def test_cli_migrate_up_and_down(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    up = fencekeeper("storage", "migrate", "--db", url)
    assert (up.returncode, up.stdout.strip()) == (0, f"database at revision {HEAD}"), up.stderr
    engine = make_engine(url)
    try:
        assert await table_names(engine) == TABLES | {"alembic_version"}
        down = fencekeeper("storage", "migrate", "--db", url, "--downgrade", "--revision", "base")
        assert (down.returncode, down.stdout.strip()) == (0, "database at revision base (empty)"), down.stderr
        assert await table_names(engine) - {"alembic_version"} == set()
    finally:
        await engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/db",  # a scheme we do not speak
        "sqlite+aiosqlite:////nonexistent-dir/fencekeeper.db",  # a file that cannot be created
        "postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres",  # nobody listens there
        "postgresql+asyncpg://postgres@127.0.0.1:notaport/postgres",  # was a traceback before the fix
    ],
    ids=["scheme", "sqlite-dir", "pg-refused", "unparsable-port"],
)
def test_cli_migrate_bad_url_is_one_line_and_exit_2(url: str) -> None:
    result = fencekeeper("storage", "migrate", "--db", url.format(port=free_port()))
    assert result.returncode == 2, result.stderr
    stderr = result.stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fencekeeper: "), result.stderr
    assert "Traceback" not in stderr
    assert result.stdout == ""
