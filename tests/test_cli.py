"""The command line as a user runs it: real processes, one plain line for every bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def fencekeeper(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the command line with `env` as its only FENCEKEEPER_* variables (none by default)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FENCEKEEPER_")}
    return subprocess.run(
        [sys.executable, "-m", "fencekeeper", *args],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["storage", "serve", "--port", "99999"], "not a TCP port"),
        (["storage", "serve", "--db", "mysql://x"], "--db must start with"),
        (["storage", "serve", "--max-body", "0"], "not a size"),
        (["storage", "serve", "--fencing", "maybe"], "invalid choice"),
        (
            ["storage", "serve", "--db", "postgresql+asyncpg://postgres@127.0.0.1:1/x"],
            "cannot use the database",
        ),
        (
            ["storage", "audit", "--db", "postgresql+asyncpg://postgres@127.0.0.1:1/x"],
            "cannot read the rejected",
        ),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_plain_line(args: list[str], message: str) -> None:
    result = fencekeeper(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fencekeeper: ") and message in lines[0], result.stderr


def test_audit_prints_rejections(tmp_path) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncEngine

    from storage_service.db import make_engine
    from storage_service.migrate import upgrade
    from storage_service.store import FencedStore, Writer

    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"

    async def seed() -> None:
        engine: AsyncEngine = make_engine(url)
        await upgrade(engine)
        store = FencedStore(engine)
        await store.record_rejection(
            "orders",
            key="k",
            op="put",
            reason="stale_epoch",
            token_epoch=3,
            current_epoch=5,
            writer=Writer("n9"),
        )
        await engine.dispose()

    asyncio.run(seed())
    result = fencekeeper("storage", "audit", "--db", url, "--namespace", "orders")
    assert result.returncode == 0, result.stderr
    assert "Rejected writes (1)" in result.stdout and "n9" in result.stdout and "stale_epoch" in result.stdout
