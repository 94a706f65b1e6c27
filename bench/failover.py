"""Failover time of the elector: from a signal to the leader until the new leader's first accepted write.

    .venv/bin/python bench/failover.py [--quick] [--trials 20] [--lease-ms 2000 --lease-ms 500 ...]
                                       [--db postgresql+asyncpg://...] [--json out.json]

What it does, for each --lease-ms (default 2000):

* `fencekeeper cluster init` of three members on free loopback ports, a storage service process with
  `--token-verify quorum` (on an embedded SQLite file by default; `--db URL` for PostgreSQL, into a
  namespace of its own), and three `fencekeeper node run --storage URL` processes running the counter
  workload (a write every --write-interval-ms while leading);
* --trials times each, alternating: SIGKILL of the leader (a crash: the others wait for its lease to run
  out at the voters), and SIGTERM of the leader (graceful: it hands its lease back before exiting);
* each trial waits for a leader whose writes flow, waits a random part of a renewal period (so the
  signal lands at a random phase of the leader's renewals), signals it, and takes the time from the
  signal to the first write the storage accepted at a higher epoch; then it restarts the signalled node
  on its data dir and lets a lease pass (a restarted voter backs no new holder for a lease);
* both ends are read on one clock: the signal's `time.time()` here and the storage's timestamp of the
  write (`at` in /history, taken by the storage process as it executes the write), both the machine's
  realtime clock;
* at the end it checks the storage history: epochs never go down, the counter never skips or repeats.

It prints a table per lease (min, median, p99, max and median / lease), the goals (crash: median
≤ 0.9 × lease and p99 ≤ lease + 100 ms; graceful: median ≤ 10 ms), a Markdown block, and with --json the
figures. The graceful path holds three fsyncs in a row (the voters' promise of the new epoch, the fence,
the write), so the machine's fsync latency (printed) bounds it from below.

Every process it starts runs in its own session and is killed on the way out, also on errors and ^C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from elector import cluster as cluster_file  # noqa: E402
from fencekeeper.processes import NodeProcess, StorageProcess, free_base_port, node_command  # noqa: E402
from storage_service.client import StorageClient  # noqa: E402

CRASH, GRACEFUL = "crash (SIGKILL)", "graceful (SIGTERM)"
GOAL_CRASH_MEDIAN = 0.9  # × lease
GOAL_CRASH_P99_OVER_MS = 100.0  # p99 ≤ lease + this
GOAL_GRACEFUL_MEDIAN_MS = 10.0
RUNNING: list[Any] = []  # every process started, for the last-resort cleanup in main()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (with 20 samples, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def fsync_ms(directory: Path, rounds: int = 20) -> float:
    """Median time of what a voter does to persist a promise: write, fsync, rename, fsync the directory."""
    times = []
    path, tmp = directory / "fsync-probe.json", directory / "fsync-probe.tmp"
    for _ in range(rounds):
        start = time.perf_counter()
        with open(tmp, "w") as handle:
            handle.write('{"probe": 1}')
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append((time.perf_counter() - start) * 1000)
    path.unlink(missing_ok=True)
    return statistics.median(times)


class NodeProc(NodeProcess):
    """A node, and when it first answered (its voter's quiet period after a restart runs from then)."""

    ready: float = 0.0  # monotonic

    def spawn(self) -> None:
        super().spawn()
        self.ready = float("inf")

    def wait(self, timeout: float) -> int | None:
        """Its exit status, or None if it had to be killed."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


@dataclass
class Bench:
    lease_ms: int
    group: str
    dir: Path
    db_url: str | None
    interval_ms: float
    console: Console
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    storage: StorageProcess | None = None
    session: aiohttp.ClientSession | None = None
    client: StorageClient | None = None
    renew_ms: int = 0

    async def start(self) -> None:
        base = free_base_port(3)
        cluster_dir = self.dir / "cluster"
        init = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fencekeeper",
            "cluster",
            "init",
            "--out",
            str(cluster_dir),
            "--nodes",
            "3",
            "--base-port",
            str(base),
            "--lease-ms",
            str(self.lease_ms),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await init.communicate()
        if init.returncode != 0:
            raise RuntimeError(f"cluster init failed: {err.decode()}")
        cluster_path = cluster_dir / "cluster.toml"
        cluster = cluster_file.load(cluster_path)
        self.renew_ms = cluster.timing.renew_ms
        db_url = self.db_url or f"sqlite+aiosqlite:///{self.dir / 'storage.db'}"
        self.storage = StorageProcess(
            db_url,
            self.dir / "storage.log",
            extra_args=("--token-verify", "quorum", "--cluster", str(cluster_path)),
        )
        RUNNING.append(self.storage)
        await self.storage.start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        self.client = StorageClient(self.storage.url, session=self.session)
        for member in cluster.members:
            args = node_command(
                cluster_path, member.id, self.dir / f"data-{member.id}", self.group,
                "--storage", self.storage.url, "--write-interval-ms", str(self.interval_ms),
                "--log-file", str(self.dir / f"{member.id}.log"),
            )  # fmt: skip
            node = NodeProc(
                member.id, args, member.url, self.dir / f"{member.id}.log", self.dir / f"{member.id}.err"
            )
            self.nodes[member.id] = node
            RUNNING.append(node)
            node.spawn()
        for node in self.nodes.values():
            await self.wait_serving(node)

    async def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
        if self.storage is not None:
            self.storage.kill()
        if self.session is not None:
            await self.session.close()

    async def get(self, url: str) -> tuple[int, Any]:
        assert self.session is not None
        try:
            async with self.session.get(url) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return 0, repr(exc)

    async def wait_serving(self, node: NodeProc, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while (await self.get(node.url + "/healthz"))[0] != 200:
            if not node.alive():
                raise RuntimeError(f"{node.id} exited: {node.err_file.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.id} did not serve within {within:.0f} s")
            await asyncio.sleep(0.05)
        node.ready = time.monotonic()

    async def stable_leader(self, within: float = 30.0) -> tuple[str, int, int]:
        """(leader, epoch, last seq) once every node serves, one leads and its writes reach the storage,
        and every node has run for a lease (a restarted voter backs no new holder for one lease)."""
        assert self.client is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            quiet_left = max(n.ready for n in self.nodes.values()) + self.lease_ms / 1000 + 0.1
            if time.monotonic() < quiet_left:
                await asyncio.sleep(quiet_left - time.monotonic())
                continue
            views = await asyncio.gather(
                *(self.get(f"{n.url}/v1/groups/{self.group}/leader") for n in self.nodes.values())
            )
            leaders = [body for status, body in views if status == 200 and body["role"] == "leader"]
            if len(leaders) == 1 and all(status == 200 for status, _ in views):
                leader, epoch = leaders[0]["node"], leaders[0]["epoch"]
                history = await self.client.history(self.group)
                mine = [h for h in history if h["epoch"] == epoch]
                if len(mine) >= 3:
                    return leader, epoch, history[-1]["seq"]
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no stable leader within {within:.0f} s")

    async def first_write_above(
        self, epoch: int, after: int, within: float, not_by: str
    ) -> dict[str, Any] | None:
        """The first write at a higher epoch by another node than `not_by` (the signalled leader, which
        may have renewed at a new epoch before the signal: its writes are not the next leader's)."""
        assert self.client is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for item in await self.client.history(self.group, after=after):
                if item["epoch"] > epoch and item["writer"] != not_by:
                    return item
                after = item["seq"]
            await asyncio.sleep(0.01)
        return None

    async def trial(self, kind: str, rng: random.Random) -> dict[str, Any]:
        leader, epoch, last_seq = await self.stable_leader()
        node = self.nodes[leader]
        await asyncio.sleep(rng.uniform(0, self.renew_ms / 1000))  # a random phase of the renewals
        signum = signal.SIGKILL if kind == CRASH else signal.SIGTERM
        sent = time.time()
        node.signal(signum)
        within = max(10.0, 5 * self.lease_ms / 1000)
        first = await self.first_write_above(epoch, last_seq, within, not_by=leader)
        exit_code = node.wait(10)
        result: dict[str, Any] = {"kind": kind, "old_leader": leader, "old_epoch": epoch, "exit": exit_code}
        if first is None:
            result["ms"] = None
        else:
            at = datetime.fromisoformat(first["at"]).timestamp()
            result |= {"ms": (at - sent) * 1000, "new_leader": first["writer"], "new_epoch": first["epoch"]}
            elected = self.logged_at(first["writer"], "became_leader", first["epoch"])
            result["elected_ms"] = None if elected is None else round((elected - sent) * 1000, 1)
        node.spawn()
        await self.wait_serving(node)
        return result

    def logged_at(self, node_id: str, event: str, epoch: int) -> float | None:
        """When a node logged `event` at `epoch` (its log's wall-clock `ts`, to the millisecond)."""
        try:
            lines = (self.dir / f"{node_id}.log").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            entry = json.loads(line)
            if entry.get("event") == event and entry.get("epoch") == epoch:
                return datetime.fromisoformat(entry["ts"]).timestamp()
        return None

    async def check_history(self) -> dict[str, Any]:
        assert self.client is not None
        history = await self.client.history(self.group, values=True)
        epochs = [h["epoch"] for h in history]
        values = [int(base64.b64decode(h["value_base64"])) for h in history]
        return {
            "accepted_writes": len(history),
            "epochs_monotonic": epochs == sorted(epochs),
            "counter_contiguous": values == list(range(1, len(values) + 1)),
            "rejected_writes": len(await self.client.rejections(self.group)),
        }


class Trials(Protocol):
    """A leader election under test: `trial` signals the leader and times the failover ("kind", "ms",
    "old_leader", "old_epoch", and "new_leader", "new_epoch" when a new leader wrote)."""

    async def trial(self, kind: str, rng: random.Random) -> dict[str, Any]: ...


async def alternate_trials(
    target: Trials, trials: int, rng: random.Random, console: Console, label: str
) -> list[dict[str, Any]]:
    """`trials` of each kind, crash and graceful alternating (so drift on the machine hits both), each
    printed as it ends; shared with bench/peers so every system is timed by the same loop."""
    done: list[dict[str, Any]] = []
    for i in range(trials):
        for kind in (CRASH, GRACEFUL):
            trial = await target.trial(kind, rng)
            if trial["ms"] is not None and trial["ms"] < 0:
                # The next leader wrote before the signal: the leader had changed already, so this
                # trial timed no failover. It is kept (marked void) and left out of the figures.
                trial["void"] = True
            done.append(trial)
            console.print(
                f"{label}, trial {i + 1}/{trials}, {kind}: "
                f"{_fmt(trial['ms'])} ms (elected after {_fmt(trial.get('elected_ms'))} ms; "
                f"{trial['old_leader']}@{trial['old_epoch']} -> "
                f"{trial.get('new_leader', '?')}@{trial.get('new_epoch', '?')})"
                + (" [void: the leader changed before the signal]" if trial.get("void") else ""),
                highlight=False,
            )
    return done


def summarize(lease_ms: int, kind: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [t["ms"] for t in trials if t["ms"] is not None]
    row: dict[str, Any] = {
        "lease_ms": lease_ms,
        "kind": kind,
        "trials": len(trials),
        "failed": len(trials) - len(samples),
        "samples_ms": [round(s, 2) for s in samples],
    }
    if not samples:
        return row | {"goal_met": False}
    row |= {
        "min_ms": round(min(samples), 2),
        "median_ms": round(statistics.median(samples), 2),
        "p99_ms": round(percentile(samples, 99), 2),
        "max_ms": round(max(samples), 2),
        "median_over_lease": round(statistics.median(samples) / lease_ms, 3),
    }
    if kind == CRASH:
        row["goal"] = f"median ≤ {GOAL_CRASH_MEDIAN} × lease, p99 ≤ lease + {GOAL_CRASH_P99_OVER_MS:.0f} ms"
        row["goal_met"] = (
            row["failed"] == 0
            and row["median_ms"] <= GOAL_CRASH_MEDIAN * lease_ms
            and row["p99_ms"] <= lease_ms + GOAL_CRASH_P99_OVER_MS
        )
    else:
        row["goal"] = f"median ≤ {GOAL_GRACEFUL_MEDIAN_MS:.0f} ms"
        row["goal_met"] = row["failed"] == 0 and row["median_ms"] <= GOAL_GRACEFUL_MEDIAN_MS
    return row


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Failover, {result['config']['trials']} trials per kind, storage on {result['config']['storage']}, "
        f"3 nodes on loopback; {m['cpus']} CPUs, load {m['load_before']} at start, "
        f"fsync (voter promise) median {m['fsync_ms']:.1f} ms.",
        "",
        "| lease | signal | trials | min ms | median ms | p99 ms | max ms | median / lease | goal | met |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in result["results"]:
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(
            f"| {row['lease_ms']} ms | {row['kind']} | {row['trials']}{failed} | {_fmt(row.get('min_ms'))} "
            f"| {_fmt(row.get('median_ms'))} | {_fmt(row.get('p99_ms'))} | {_fmt(row.get('max_ms'))} "
            f"| {_fmt(row.get('median_over_lease'))} | {row.get('goal', '-')} "
            f"| {'yes' if row['goal_met'] else 'no'} |"
        )
    return "\n".join(lines)


def print_result(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="time from the signal to the new leader's first accepted write")
    for column in (
        "lease",
        "signal",
        "trials",
        "min ms",
        "median ms",
        "p99 ms",
        "max ms",
        "med/lease",
        "goal",
    ):
        table.add_column(column, justify="right" if column not in ("signal", "goal") else "left")
    for row in result["results"]:
        goal = (
            f"[green]{row.get('goal', '')}[/]" if row["goal_met"] else f"[red]{row.get('goal', 'failed')}[/]"
        )
        table.add_row(
            f"{row['lease_ms']} ms",
            row["kind"],
            f"{row['trials']}" + (f" ([red]{row['failed']} failed[/])" if row["failed"] else ""),
            _fmt(row.get("min_ms")),
            _fmt(row.get("median_ms")),
            _fmt(row.get("p99_ms")),
            _fmt(row.get("max_ms")),
            _fmt(row.get("median_over_lease")),
            goal,
        )
    console.print(table)
    for check in result["checks"]:
        ok = check["epochs_monotonic"] and check["counter_contiguous"]
        console.print(
            f"lease {check['lease_ms']} ms: {check['accepted_writes']} accepted writes, "
            f"{check['rejected_writes']} rejected; epochs never went down: {check['epochs_monotonic']}, "
            f"counter without gaps or repeats: {check['counter_contiguous']}",
            style="green" if ok else "bold red",
        )
    console.print("\n[bold]Markdown[/]\n")
    console.print(result["markdown"], markup=False, highlight=False)


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "config": {
            "trials": args.trials,
            "lease_ms": args.lease_ms,
            "storage": "PostgreSQL" if args.db else "SQLite",
            "write_interval_ms": args.write_interval_ms,
            "seed": args.seed,
        },
        "results": [],
        "checks": [],
        "trials": [],
    }
    tmp = tempfile.mkdtemp(prefix="fencekeeper-failover-")
    try:
        result["machine"] = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_before": round(os.getloadavg()[0], 2),
            "fsync_ms": round(fsync_ms(Path(tmp)), 2),
        }
        run_id = secrets.token_hex(3)
        for lease_ms in args.lease_ms:
            bench = Bench(
                lease_ms,
                f"failover-{lease_ms}ms-{run_id}",
                Path(tmp) / f"lease-{lease_ms}",
                args.db,
                args.write_interval_ms,
                console,
            )
            bench.dir.mkdir()
            try:
                await bench.start()
                trials = await alternate_trials(bench, args.trials, rng, console, f"lease {lease_ms} ms")
                result["trials"] += [{"lease_ms": lease_ms, **t} for t in trials]
                result["checks"].append({"lease_ms": lease_ms, **await bench.check_history()})
            finally:
                await bench.stop()
            for kind in (CRASH, GRACEFUL):
                timed = [t for t in trials if t["kind"] == kind and not t.get("void")]
                result["results"].append(summarize(lease_ms, kind, timed))
    finally:
        if args.keep:
            console.print(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["markdown"] = markdown(result)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per kind and lease (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 trials per kind: a run of about a minute")
    parser.add_argument(
        "--lease-ms", type=int, action="append", help="lease length; repeatable (default 2000)"
    )
    parser.add_argument("--db", help="storage database URL (default: an embedded SQLite file)")
    parser.add_argument("--write-interval-ms", type=float, default=20.0, help="the workload's write interval")
    parser.add_argument("--seed", type=int, default=1, help="seed of the signal phases")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, data) for a look")
    args = parser.parse_args(argv)
    args.lease_ms = args.lease_ms or [2000]
    if args.quick:
        args.trials = min(args.trials, 5)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends the run as ^C does: through the finally blocks that stop every process."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = asyncio.run(run(args, console))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    finally:
        for proc in RUNNING:  # last resort: anything a failed start or an interrupt left behind
            try:
                proc.kill()
            except (OSError, subprocess.SubprocessError):
                pass
    print_result(console, result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    # The goals are figures to read; the exit status says whether the history stayed safe.
    safe = all(c["epochs_monotonic"] and c["counter_contiguous"] for c in result["checks"])
    return 0 if safe else 1


if __name__ == "__main__":
    sys.exit(main())
