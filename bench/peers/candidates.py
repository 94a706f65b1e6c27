"""Three candidate processes of a peer's recipe, timed the way bench/failover.py times fencekeeper's nodes.

A trial waits for a leader whose fenced writes flow while all three candidates are queued, waits a random
part of a renewal period, signals the leader (SIGKILL: a crash; SIGTERM: the candidate resigns), and takes
the time from the signal to the first fenced write accepted at a higher token, as the candidate that made
it logged it (its `time.time()` right after the server's answer; the signal's is taken here, one clock).
Then it restarts the signalled candidate, which queues up behind the others.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.failover import CRASH
from fencekeeper.processes import NodeProcess


def leader_of(events: dict[str, list[dict[str, Any]]], min_writes: int) -> tuple[str, int] | None:
    """(candidate, token) of the leader whose writes flow: the highest token elected, held by a candidate
    that has not logged its loss and has `min_writes` accepted writes at it."""
    best: tuple[str, int] | None = None
    for ident, lines in events.items():
        for line in lines:
            if line["event"] == "elected" and (best is None or line["token"] > best[1]):
                best = ident, line["token"]
    if best is None:
        return None
    ident, token = best
    mine = [e for e in events[ident] if e.get("token") == token]
    writes = sum(1 for e in mine if e["event"] == "write")
    lost = any(e["event"] in ("lost", "resigned") for e in mine)
    return None if lost or writes < min_writes else best


def first_write_above(
    events: dict[str, list[dict[str, Any]]], token: int, not_by: str = ""
) -> dict[str, Any] | None:
    """The earliest accepted write at a token above `token` by another candidate than `not_by`."""
    later = [
        e
        for ident, lines in events.items()
        if ident != not_by
        for e in lines
        if e["event"] == "write" and e["token"] > token
    ]
    return min(later, key=lambda e: e["ts"]) if later else None


class CandidateGroup:
    """The candidates of one election, restarted as trials need; `contenders` asks the server how many
    are queued (a candidate restarted after a crash must be in line before the next trial)."""

    def __init__(
        self,
        name: str,
        directory: Path,
        command: Callable[[str, Path], list[str]],
        contenders: Callable[[], Awaitable[int]],
        renew_s: float,
        count: int = 3,
    ) -> None:
        self.name = name
        self.contenders = contenders
        self.renew_s = renew_s
        self.unexpected_exits: list[str] = []  # candidates that ended on their own, and their stderr's end
        self.procs = {
            f"c{i}": NodeProcess(
                f"c{i}",
                command(f"c{i}", directory / f"c{i}.log"),
                "",  # a candidate serves no HTTP of its own
                directory / f"c{i}.log",
                directory / f"c{i}.err",
            )
            for i in range(1, count + 1)
        }

    async def start(self) -> None:
        for proc in self.procs.values():
            proc.spawn()
            await asyncio.sleep(0.2)  # queue in order: c1 leads first

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()

    def events(self) -> dict[str, list[dict[str, Any]]]:
        return {ident: proc.events() for ident, proc in self.procs.items()}

    def _restart_exited(self) -> None:
        """Restart a candidate that ended without a signal (a lost lease or session, an error), and keep
        its reason for the report: under load that is part of what a recipe does."""
        for proc in self.procs.values():
            if not proc.alive():
                lines = (
                    proc.err_file.read_text(errors="replace").strip().splitlines()
                    if proc.err_file.exists()
                    else []
                )
                lost = [e.get("why", "") for e in proc.events("lost")]
                code = proc.proc.returncode if proc.proc is not None else None
                self.unexpected_exits.append(f"{proc.id} exit {code}: {(lost or lines or ['?'])[-1]}")
                proc.spawn()

    async def stable_leader(self, within: float = 30.0) -> tuple[str, int]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self._restart_exited()
            found = leader_of(self.events(), min_writes=3)
            if found is not None and await self.contenders() == len(self.procs):
                return found
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name}: no stable leader within {within:.0f} s")

    async def trial(self, kind: str, rng: random.Random) -> dict[str, Any]:
        """One failover, in the shape of bench/failover.py's trials."""
        leader, token = await self.stable_leader()
        proc = self.procs[leader]
        await asyncio.sleep(rng.uniform(0, self.renew_s))  # a random phase of the renewals
        sent = time.time()
        proc.signal(signal.SIGKILL if kind == CRASH else signal.SIGTERM)
        result: dict[str, Any] = {"kind": kind, "old_leader": leader, "old_epoch": token, "ms": None}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            first = first_write_above(self.events(), token, not_by=leader)
            if first is not None:
                elected = [
                    e["ts"] for e in self.procs[first["id"]].events("elected") if e["token"] == first["token"]
                ]
                result |= {
                    "ms": (first["ts"] - sent) * 1000,
                    "new_leader": first["id"],
                    "new_epoch": first["token"],
                    "elected_ms": round((elected[0] - sent) * 1000, 1) if elected else None,
                }
                break
            await asyncio.sleep(0.01)
        assert proc.proc is not None
        result["exit"] = await asyncio.to_thread(proc.proc.wait, 10)
        proc.spawn()
        return result
