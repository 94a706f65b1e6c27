"""Fenced vs unfenced REST write throughput, and fence-raise latency under load, on PostgreSQL.

    .venv/bin/python bench/storage_write.py [--quick] [--clients 64] [--seconds S] [--json out.json]

What it does:

* creates a throwaway database on the PostgreSQL server (127.0.0.1:5432, user postgres; see --pg) and
  drops it at the end;
* starts two real server processes on it (`fencekeeper storage serve`), one with `--fencing on` and one
  with `--fencing off`, same database and settings; each arm writes its own namespace;
* drives `PUT /v1/namespaces/{ns}/objects/{key}` with `Fencing-Token: <epoch>` from --clients concurrent
  writers sharing one keep-alive aiohttp ClientSession per server; each PUT picks one of --keys keys
  uniformly at random and sends a --value-size byte body;
* runs three arms, alternating in rounds to cancel drift (fenced, unfenced, fenced+raises, fenced, ...):
  - `fenced`: the fence stands still; the write path's full cost;
  - `unfenced`: the control arm (`--fencing off`), same statement minus the fence;
  - `fenced+raises`: the fenced load while a raiser raises the fence to epoch+1 every --raise-every
    seconds (its latency is the "raise" figure). The raiser is a process of its own, like a new leader,
    so the writers' busy event loop does not add to its latency; the epoch lives in shared memory, the
    writers send the newest one, and the 409s for writes sent at a superseded epoch are counted as
    `stale`, not as errors;
* each round warms up for --warmup s (not counted), then counts the writes that complete in --seconds s;
* prints a table, the fenced/unfenced ratio, the raise latencies and a Markdown block for
  docs/benchmarks.md, and writes every figure (per round too) as JSON to --json.

CPU: the load generator shares the machine's cores with the server and PostgreSQL, so every round also
reads from /proc the CPU time of the client (this process and the raiser), of the server process(es), of
the PostgreSQL server's processes, and of everything else (`other`: work that is not ours skews the
figures), as cores and as CPU µs per accepted write (Linux only; elsewhere those figures read 0).

At the end it checks the run against the database: the accepted writes the server recorded equal the
200s the clients saw, the rejected writes equal the 409s, and in the fenced namespace no write has a
lower epoch than a write recorded before it (the fence's safety rule, in commit-log order).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from rich.console import Console
from rich.table import Table
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fencekeeper.processes import StorageProcess, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
GOAL_RATIO = 0.9
GOAL_RAISE_P99_MS = 50.0


# -- CPU accounting (/proc) ------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone or /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _postgres_pids(postmaster: int | None) -> list[int]:
    """The postmaster and its children (backends, WAL writer, ...): that server's CPU, not other clusters'."""
    if postmaster is None:
        return []
    pids = [postmaster]
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _ppid(int(entry.name)) == postmaster:
                pids.append(int(entry.name))
    return pids


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    try:
        with open("/proc/stat", "rb") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuSnapshot:
    wall: float
    client: float
    servers: dict[int, float]
    postgres: dict[int, float]
    busy: float

    @classmethod
    def take(cls, server_pids: list[int], postmaster: int | None, client_pids: list[int]) -> CpuSnapshot:
        return cls(
            wall=time.perf_counter(),
            client=time.process_time() + sum(_proc_cpu(pid) for pid in client_pids),
            servers={pid: _proc_cpu(pid) for pid in server_pids},
            postgres={pid: _proc_cpu(pid) for pid in _postgres_pids(postmaster)},
            busy=_machine_busy()[0],
        )

    def cores_since(self, before: CpuSnapshot) -> dict[str, float]:
        """CPU used between two snapshots, in cores (CPU seconds per wall second)."""
        wall = self.wall - before.wall

        def delta(now: dict[int, float], then: dict[int, float]) -> float:
            return sum(cpu - then.get(pid, 0.0) for pid, cpu in now.items())

        used = {
            "client": self.client - before.client,
            "server": delta(self.servers, before.servers),
            "postgres": delta(self.postgres, before.postgres),
            "machine": self.busy - before.busy,
        }
        # Everything else that ran meanwhile (other work on the machine skews the figures: look here).
        used["other"] = max(0.0, used["machine"] - used["client"] - used["server"] - used["postgres"])
        return {name: round(value / wall, 3) for name, value in used.items()}


# -- the servers -----------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The process and its descendants (a server with worker processes)."""
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                found += kids
                todo += kids
    return found


@dataclass
class Server:
    fencing: bool
    port: int
    log_dir: Path
    db_url: str
    extra: list[str]
    proc: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        name = "on" if self.fencing else "off"
        cmd = StorageProcess(
            self.db_url,
            self.log_dir / f"server-{name}.log",
            port=self.port,
            fencing=self.fencing,
            extra_args=tuple(self.extra),
        ).command()
        with open(self.log_dir / f"server-{name}.out", "wb") as out:  # the child keeps its own copy
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Spawn the server and wait until it answers /readyz."""
        self.spawn()
        assert self.proc is not None
        name = "on" if self.fencing else "off"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server (fencing {name}) exited: see {self.log_dir / f'server-{name}.out'}"
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.base}/readyz") as resp:
                    if resp.status == 200:
                        await asyncio.sleep(0.3)  # let worker processes (if any) come up too
                        self.pids = _children(self.proc.pid)
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"server (fencing {name}) did not become ready in 30 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- load ------------------------------------------------------------------------------------------------


class Fence:
    """The newest epoch of a namespace as the clients know it, in memory shared with the raiser process:
    it moves the epoch, the writers send the current one. `raises_started` is odd while a raise is out."""

    def __init__(self, ctx: BaseContext) -> None:
        self.shared_epoch = ctx.Value("q", 0, lock=False)
        self.shared_raises = ctx.Value("q", 0, lock=False)
        self._headers: tuple[int, dict[str, str]] = (-1, {})

    @property
    def epoch(self) -> int:
        return self.shared_epoch.value

    @property
    def raises_started(self) -> int:
        return self.shared_raises.value

    def set(self, epoch: int) -> None:
        self.shared_epoch.value = epoch

    def headers(self, epoch: int) -> dict[str, str]:
        if self._headers[0] != epoch:
            self._headers = (epoch, {"Fencing-Token": str(epoch), "Content-Type": "application/octet-stream"})
        return self._headers[1]


@dataclass
class Window:
    """What the clients saw during one measured window."""

    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    stale: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    raises: list[float] = field(default_factory=list)
    raise_errors: int = 0


@dataclass
class Arm:
    name: str
    server: Server
    namespace: str
    fence: Fence
    raises: bool
    session: aiohttp.ClientSession | None = None
    urls: list[URL] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    ok: int = 0
    conflicts: int = 0


@dataclass
class Raiser:
    proc: BaseProcess
    conn: Connection


async def _writer(arm: Arm, value: bytes, win: Window, stop: float, rng: random.Random) -> None:
    session, urls, fence = arm.session, arm.urls, arm.fence
    assert session is not None
    perf = time.perf_counter
    while True:
        t0 = perf()
        if t0 >= stop:
            return
        epoch, raises = fence.epoch, fence.raises_started
        try:
            url = urls[rng.randrange(len(urls))]
            async with session.put(url, data=value, headers=fence.headers(epoch)) as r:
                await r.read()
                status = r.status
        except aiohttp.ClientError as exc:
            status, body = 0, repr(exc)
        t1 = perf()
        if status == 200:
            arm.ok += 1
            if win.start <= t1 < win.end:
                win.latencies.append(t1 - t0)
            continue
        if status == 409:
            arm.conflicts += 1
            # Expected only when the fence moved (or was moving) while this write was on its way.
            if epoch < fence.epoch or fence.raises_started != raises or raises % 2:
                if win.start <= t1 < win.end:
                    win.stale += 1
                continue
        if status != 0:
            body = (await r.text())[:200] if not r.closed else ""
        if win.start <= t1 < win.end:
            win.errors += 1
            if len(win.error_samples) < 5:
                win.error_samples.append(f"{status} {body}")


async def _raise_fence(
    session: aiohttp.ClientSession, base: str, namespace: str, epoch: int
) -> tuple[int, float, str]:
    url = f"{base}/v1/namespaces/{namespace}/fence"
    t0 = time.perf_counter()
    async with session.post(url, headers={"Fencing-Token": str(epoch)}) as resp:
        body = await resp.text()
    return resp.status, time.perf_counter() - t0, body


def _raiser_process(conn: Connection, shared_epoch: Any, shared_raises: Any) -> None:
    """The fence raiser, a process of its own, as a new leader would be: its latency is not held up by the
    writers' event loop. Each job raises one namespace's fence to epoch+1 every `every` s in a window."""
    asyncio.run(_raiser_jobs(conn, shared_epoch, shared_raises))


async def _raiser_jobs(conn: Connection, shared_epoch: Any, shared_raises: Any) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while (job := await loop.run_in_executor(None, conn.recv)) is not None:
            base, namespace, start, end, every = job
            took: list[float] = []
            failures: list[str] = []
            next_at = start
            while True:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                if time.perf_counter() >= end:
                    break
                target = shared_epoch.value + 1
                shared_raises.value += 1  # odd: a raise is out, so a writer can tell a 409 it had coming
                try:
                    status, secs, body = await _raise_fence(session, base, namespace, target)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, secs, body = 0, 0.0, repr(exc)
                if status == 200:
                    shared_epoch.value = target  # before the counter goes even again
                    took.append(secs)
                else:
                    failures.append(f"raise {status} {body[:200]}")
                shared_raises.value += 1
                next_at += every
            conn.send((took, failures))


async def _wait_quiet(limit: float, console: Console) -> float:
    """Wait up to `limit` s until the machine is nearly idle (other work skews a round); return its load."""
    deadline = time.monotonic() + limit
    while True:
        busy0, wall0 = _machine_busy()[0], time.perf_counter()
        await asyncio.sleep(0.5)
        load = (_machine_busy()[0] - busy0) / (time.perf_counter() - wall0)
        if load < 0.25 or time.monotonic() >= deadline:
            if load >= 0.25:
                console.print(f"[yellow]the machine is busy ({load:.2f} cores) before this round[/]")
            return load
        await asyncio.sleep(1.0)


async def _round(arm: Arm, args: argparse.Namespace, raiser: Raiser | None) -> dict[str, Any]:
    value = random.Random(7).randbytes(args.value_size)
    now = time.perf_counter()
    win = Window(start=now + args.warmup, end=now + args.warmup + args.seconds)
    stop = win.end
    rng = random.Random(len(arm.rounds))
    writers = [
        asyncio.create_task(_writer(arm, value, win, stop, random.Random(rng.random())))
        for _ in range(args.clients)
    ]
    raising = arm.raises and raiser is not None
    if raising:
        raiser.conn.send((arm.server.base, arm.namespace, win.start, win.end, args.raise_every))
    client_pids = [raiser.proc.pid] if raiser is not None and raiser.proc.pid else []
    await asyncio.sleep(max(0.0, win.start - time.perf_counter()))
    before = CpuSnapshot.take(arm.server.pids, args.postmaster, client_pids)
    await asyncio.sleep(max(0.0, win.end - time.perf_counter()))
    after = CpuSnapshot.take(arm.server.pids, args.postmaster, client_pids)
    # Requests carry no timeout of their own (its timer costs the client ~20% CPU per request); a
    # request that hangs fails the round here instead.
    await asyncio.wait_for(asyncio.gather(*writers), timeout=60)
    if raising:
        assert raiser is not None
        if not await asyncio.to_thread(raiser.conn.poll, 60):
            raise RuntimeError("the raiser process did not report")
        win.raises, failures = raiser.conn.recv()
        win.raise_errors = len(failures)
        win.error_samples += failures[:5]
    lat = win.latencies
    cores = after.cores_since(before)
    return {
        "arm": arm.name,
        "seconds": round(win.end - win.start, 3),
        "writes": len(lat),
        "writes_per_s": round(len(lat) / (win.end - win.start), 1),
        "p50_ms": _pct_ms(lat, 50),
        "p99_ms": _pct_ms(lat, 99),
        "stale_409": win.stale,
        "errors": win.errors,
        "error_samples": win.error_samples,
        "raises": len(win.raises),
        "raise_errors": win.raise_errors,
        "raise_latencies_ms": [round(x * 1000, 3) for x in win.raises],
        "latencies": lat,  # dropped before the JSON is written
        "cpu_cores": cores,
        "cpu_us_per_write": {
            k: round(cores[k] * (win.end - win.start) / max(1, len(lat)) * 1e6)
            for k in ("client", "server", "postgres")
        },
    }


def _pct_ms(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return round(ordered[index] * 1000, 2)


def _summary(arm: Arm) -> dict[str, Any]:
    rounds = arm.rounds
    lat = [x for r in rounds for x in r["latencies"]]
    seconds = sum(r["seconds"] for r in rounds)
    cpu = {
        k: round(sum(r["cpu_cores"][k] * r["seconds"] for r in rounds) / seconds, 3)
        for k in rounds[0]["cpu_cores"]
    }
    out = {
        "arm": arm.name,
        "fencing": arm.server.fencing,
        "rounds": len(rounds),
        "seconds": round(seconds, 2),
        "writes": len(lat),
        "writes_per_s": round(len(lat) / seconds, 1),
        "writes_per_s_by_round": [r["writes_per_s"] for r in rounds],
        "p50_ms": _pct_ms(lat, 50),
        "p99_ms": _pct_ms(lat, 99),
        "max_ms": _pct_ms(lat, 100),
        "stale_409": sum(r["stale_409"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "cpu_cores": cpu,
        # CPU time per accepted write, in microseconds: steadier than writes/s when other work shares the
        # machine, and the figure that says where a write's cost goes.
        "cpu_us_per_write": {
            k: round(cpu[k] * seconds / max(1, len(lat)) * 1e6) for k in ("client", "server", "postgres")
        },
    }
    if arm.raises:
        raises = [x / 1000 for r in rounds for x in r["raise_latencies_ms"]]
        out["raise"] = {
            "count": len(raises),
            "errors": sum(r["raise_errors"] for r in rounds),
            "p50_ms": _pct_ms(raises, 50),
            "p99_ms": _pct_ms(raises, 99),
            "max_ms": _pct_ms(raises, 100),
        }
    return out


# -- database --------------------------------------------------------------------------------------------


async def _admin(pg: str) -> asyncpg.Connection:
    return await asyncpg.connect(f"{pg}/postgres")


async def create_database(pg: str, prefix: str) -> tuple[str, str, int | None]:
    """A fresh database for one run: its name, its SQLAlchemy URL and the postmaster's pid (None when the
    server is not on this machine: its CPU cannot be counted)."""
    db = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await _admin(pg)
    try:
        await admin.execute(f'CREATE DATABASE "{db}"')
        postmaster = _ppid(await admin.fetchval("SELECT pg_backend_pid()"))
    finally:
        await admin.close()
    return db, "postgresql+asyncpg://" + pg.split("://", 1)[1] + f"/{db}", postmaster


async def drop_database(pg: str, db: str) -> None:
    admin = await _admin(pg)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    finally:
        await admin.close()


async def _check(pg: str, db: str, arms: list[Arm]) -> dict[str, Any]:
    """Compare what the clients saw with what the database recorded; check epoch order in the fenced ns."""
    conn = await asyncpg.connect(f"{pg}/{db}")
    try:
        out: dict[str, Any] = {}
        for ns in sorted({arm.namespace for arm in arms}):
            mine = [arm for arm in arms if arm.namespace == ns]
            accepted = await conn.fetchval("SELECT count(*) FROM write_history WHERE namespace = $1", ns)
            rejected = await conn.fetchval("SELECT count(*) FROM rejected_writes WHERE namespace = $1", ns)
            regressions = await conn.fetchval(
                """
                SELECT count(*) FROM (
                    SELECT epoch < max(epoch) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING
                                                    AND 1 PRECEDING) AS bad
                    FROM write_history WHERE namespace = $1
                ) t WHERE bad
                """,
                ns,
            )
            out[ns] = {
                "client_200": sum(arm.ok for arm in mine),
                "db_accepted": accepted,
                "client_409": sum(arm.conflicts for arm in mine),
                "db_rejected": rejected,
                "epoch_regressions": regressions,
                "fencing": mine[0].server.fencing,
            }
        return out
    finally:
        await conn.close()


# -- output ----------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _markdown(result: dict[str, Any]) -> str:
    s, cfg = result["arms"], result["config"]
    lines = [
        f"### Fenced REST writes on PostgreSQL ({result['date']})",
        "",
        f"`{result['command']}`: {cfg['clients']} concurrent clients, one namespace per arm, "
        f"{cfg['keys']} keys chosen at random, {cfg['value_size']}-byte values, "
        f"{cfg['rounds']} x {cfg['seconds']} s per arm in alternating rounds, server `{cfg['server_args']}`, "
        f"{result['machine']}.",
        "",
        "| arm | writes/s | p50 ms | p99 ms | 409 stale | errors | CPU cores: client / server / pg / other "
        "| CPU µs per write: client / server / pg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for a in s.values():
        c, u = a["cpu_cores"], a["cpu_us_per_write"]
        lines.append(
            f"| {a['arm']} | {_fmt(a['writes_per_s'], 0)} | {_fmt(a['p50_ms'], 2)} | {_fmt(a['p99_ms'], 2)} "
            f"| {_fmt(a['stale_409'])} | {_fmt(a['errors'])} "
            f"| {c['client']:.2f} / {c['server']:.2f} / {c['postgres']:.2f} / {c['other']:.2f} "
            f"| {u['client']} / {u['server']} / {u['postgres']} |"
        )
    lines.append("")
    lines.append(f"Fenced / unfenced: **{result['ratio']:.3f}** (goal ≥ {GOAL_RATIO}).")
    if result.get("raise"):
        r = result["raise"]
        lines.append(
            f"Fence raise every {cfg['raise_every'] * 1000:.0f} ms under the fenced load: "
            f"{r['count']} raises, p50 {_fmt(r['p50_ms'], 2)} ms, p99 {_fmt(r['p99_ms'], 2)} ms, "
            f"max {_fmt(r['max_ms'], 2)} ms (goal p99 ≤ {GOAL_RAISE_P99_MS:.0f} ms)."
        )
    return "\n".join(lines)


def _print(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="Fenced REST writes (PostgreSQL)")
    for column in ("arm", "writes/s", "by round", "p50 ms", "p99 ms", "max ms", "409 stale", "errors"):
        table.add_column(column, justify="left" if column in ("arm", "by round") else "right")
    table.add_column("CPU cores\nclient/server/pg/other", justify="right")
    table.add_column("CPU µs per write\nclient/server/pg", justify="right")
    for a in result["arms"].values():
        c, u = a["cpu_cores"], a["cpu_us_per_write"]
        table.add_row(
            a["arm"],
            _fmt(a["writes_per_s"], 0),
            " ".join(f"{x:,.0f}" for x in a["writes_per_s_by_round"]),
            _fmt(a["p50_ms"], 2),
            _fmt(a["p99_ms"], 2),
            _fmt(a["max_ms"], 1),
            _fmt(a["stale_409"]),
            _fmt(a["errors"]),
            " / ".join(f"{c[k]:.2f}" for k in ("client", "server", "postgres", "other")),
            " / ".join(str(u[k]) for k in ("client", "server", "postgres")),
        )
    console.print(table)
    console.print(
        f"CPU: cores (CPU s per wall s, of {os.cpu_count()}) and CPU µs per accepted write, of the client "
        "(this process), the server process(es), the PostgreSQL server's processes and everything else."
    )
    ok = result["ratio"] >= GOAL_RATIO
    console.print(
        f"fenced / unfenced = [bold]{result['ratio']:.3f}[/] ({'ok' if ok else 'BELOW'} goal {GOAL_RATIO})"
    )
    if result.get("raise"):
        r = result["raise"]
        ok = r["p99_ms"] is not None and r["p99_ms"] <= GOAL_RAISE_P99_MS
        console.print(
            f"fence raise: {r['count']} raises ({r['errors']} failed), p50 {_fmt(r['p50_ms'], 2)} ms, "
            f"p99 [bold]{_fmt(r['p99_ms'], 2)}[/] ms, max {_fmt(r['max_ms'], 2)} ms "
            f"({'ok' if ok else 'ABOVE'} goal p99 ≤ {GOAL_RAISE_P99_MS:.0f} ms)"
        )
    for ns, c in result["check"].items():
        good = c["client_200"] == c["db_accepted"] and c["client_409"] == c["db_rejected"]
        good = good and (not c["fencing"] or c["epoch_regressions"] == 0)
        console.print(
            f"check {ns}: 200s {c['client_200']:,} = accepted {c['db_accepted']:,}, "
            f"409s {c['client_409']:,} = rejected {c['db_rejected']:,}, "
            f"epoch regressions {c['epoch_regressions']} -> {'[green]ok[/]' if good else '[red]MISMATCH[/]'}"
        )
    for a in result["arms"].values():
        for sample in a.get("error_samples", [])[:3]:
            console.print(f"[red]{a['arm']} error sample:[/] {sample}")
    console.print()
    console.print(result["markdown"], markup=False, highlight=False)


# -- main ------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    console = Console(width=None if sys.stdout.isatty() else 150)
    db, db_url, args.postmaster = await create_database(args.pg, "fk_bench")
    log_dir = Path(tempfile.mkdtemp(prefix="fk-bench-"))
    extra = ["--pool-size", str(args.pool_size), *args.server_arg]
    servers = [Server(fencing, free_port(), log_dir, db_url, extra) for fencing in (True, False)]
    sessions: list[aiohttp.ClientSession] = []
    raiser: Raiser | None = None
    try:

        def session(limit: int, timeout: float | None) -> aiohttp.ClientSession:
            s = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=None),
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=10),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            sessions.append(s)
            return s

        control = session(4, 30)
        for server in servers:  # one at a time: each runs the migrations at start
            await server.start(control)
        on, off = servers
        ctx = multiprocessing.get_context("spawn")
        fences = {"bench-fenced": Fence(ctx), "bench-unfenced": Fence(ctx)}
        arms = [
            Arm("fenced", on, "bench-fenced", fences["bench-fenced"], raises=False),
            Arm("unfenced", off, "bench-unfenced", fences["bench-unfenced"], raises=False),
        ]
        if not args.no_raises:
            arms.append(Arm("fenced+raises", on, "bench-fenced", fences["bench-fenced"], raises=True))
            conn, child_conn = ctx.Pipe()
            fence = fences["bench-fenced"]
            proc = ctx.Process(
                target=_raiser_process,
                args=(child_conn, fence.shared_epoch, fence.shared_raises),
                daemon=True,
            )
            proc.start()
            raiser = Raiser(proc, conn)
        for arm in arms:
            arm.session = session(args.clients + 8, None)  # no per-request timer: see _round
            arm.urls = [
                URL(f"{arm.server.base}/v1/namespaces/{arm.namespace}/objects/k{i:03d}", encoded=True)
                for i in range(args.keys)
            ]
        for ns, fence in fences.items():
            base = on.base if ns == "bench-fenced" else off.base
            status, _, body = await _raise_fence(control, base, ns, 1)
            if status != 200:
                raise RuntimeError(f"cannot raise the fence of {ns}: {status} {body}")
            fence.set(1)
        console.print(
            f"database {db}; servers: fenced :{on.port} (pids {on.pids}), unfenced :{off.port} "
            f"(pids {off.pids}); {args.clients} clients, {args.keys} keys, {args.rounds} rounds x "
            f"({args.warmup:g} s warm-up + {args.seconds:g} s) per arm; logs in {log_dir}"
        )
        for number in range(args.rounds):
            for arm in arms:
                if args.wait_quiet:
                    await _wait_quiet(args.wait_quiet, console)
                result = await _round(arm, args, raiser)
                arm.rounds.append(result)
                raised = [x / 1000 for x in result["raise_latencies_ms"]]
                us = result["cpu_us_per_write"]
                extra_info = f"  raise p99 {_pct_ms(raised, 99)} ms" if arm.raises else ""
                console.print(
                    f"round {number + 1}/{args.rounds} {arm.name:14} "
                    f"{result['writes_per_s']:8,.0f} writes/s  "
                    f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  409 {result['stale_409']}  "
                    f"errors {result['errors']}  CPU µs/write client {us['client']} server {us['server']} "
                    f"pg {us['postgres']}  other load {result['cpu_cores']['other']:.2f}{extra_info}"
                )
        summaries = {arm.name: _summary(arm) for arm in arms}
        for arm in arms:
            summaries[arm.name]["error_samples"] = [s for r in arm.rounds for s in r["error_samples"]][:5]
        check = await _check(args.pg, db, arms)
        result: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(["python", "bench/storage_write.py", *sys.argv[1:]]),
            "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, PostgreSQL {await _pg_version(args.pg)}",
            "config": {
                "clients": args.clients,
                "keys": args.keys,
                "value_size": args.value_size,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "raise_every": args.raise_every,
                "pool_size": args.pool_size,
                "wait_quiet": args.wait_quiet,
                "server_args": " ".join(extra),
            },
            "arms": summaries,
            "ratio": round(summaries["fenced"]["writes_per_s"] / summaries["unfenced"]["writes_per_s"], 3),
            "raise": summaries.get("fenced+raises", {}).get("raise"),
            "rounds": [{k: v for k, v in r.items() if k != "latencies"} for arm in arms for r in arm.rounds],
            "check": check,
        }
        result["markdown"] = _markdown(result)
        _print(console, result)
        return result
    finally:
        if raiser is not None:
            raiser.conn.send(None)
            await asyncio.to_thread(raiser.proc.join, 5)
            if raiser.proc.is_alive():
                raiser.proc.kill()
        for s in sessions:
            await s.close()
        for server in servers:
            server.stop()
        await drop_database(args.pg, db)


async def _pg_version(pg: str) -> str:
    conn = await _admin(pg)
    try:
        return (await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 4 s per arm (under a minute in all)")
    p.add_argument("--clients", type=int, default=64, help="concurrent writers (default 64)")
    p.add_argument("--seconds", type=float, help="measured seconds per arm and round (default 10; quick 4)")
    p.add_argument("--rounds", type=int, help="rounds per arm, alternating the arms (default 3; quick 2)")
    p.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before each round")
    p.add_argument("--keys", type=int, default=64, help="keys per namespace, written at random (default 64)")
    p.add_argument("--value-size", type=int, default=128, help="bytes per PUT body (default 128)")
    p.add_argument("--raise-every", type=float, default=0.2, help="seconds between fence raises")
    p.add_argument("--no-raises", action="store_true", help="skip the fenced+raises arm")
    p.add_argument("--pool-size", type=int, default=20, help="the servers' --pool-size (default 20)")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for both servers, repeatable (e.g. --server-arg=--workers --server-arg=2)",
    )
    p.add_argument(
        "--pg",
        default=os.environ.get("FENCEKEEPER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server, without a database (default %(default)s)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each round wait up to this many seconds for the machine to be idle (default 0: no)",
    )
    p.add_argument("--json", help="write all figures as JSON here")
    args = p.parse_args(argv)
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
