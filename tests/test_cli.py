"""The command line as a user runs it: real processes, one plain line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def fencekeeper(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fencekeeper", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_demo_shows_both_split_brains_refused_with_fencing_and_damaging_without(tmp_path: Path) -> None:
    result = fencekeeper("demo", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"event": "write_rejected"') >= 2  # the storage's log lines, shown whole
    for scenario in ("leader-pause", "leader-partition"):
        assert f"{scenario}, fencing on: safe" in result.stdout
        assert f"{scenario}, fencing off: damaged" in result.stdout
        on = json.loads((tmp_path / f"{scenario}-fencing-on" / "report.json").read_text())
        off = json.loads((tmp_path / f"{scenario}-fencing-off" / "report.json").read_text())
        assert on["safe"] and on["stale_writes_rejected"] >= 1
        assert on["stale_writes_logged"] == on["stale_writes_rejected"]
        assert on["unsafe_writes"] == on["lost_updates"] == 0
        assert not off["safe"] and off["stale_writes_rejected"] == 0
        assert off["lost_updates"] > 0 or off["unsafe_writes"] > 0
        for report in (on, off):
            assert report["election_count"] >= 2 and report["accepted_writes"] > 50, report
            assert Path(report["timeline"]).stat().st_size > 10_000


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
