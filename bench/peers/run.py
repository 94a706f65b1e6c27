"""fencekeeper against etcd and ZooKeeper, measured in one run on this machine (issue 7).

    .venv/bin/python -m bench.peers [--quick] [--trials 20] [--rounds 3] [--seconds 10] [--no-write-docs]

* etcd 3.4 (Debian's `etcd-server`, three members) and ZooKeeper 3.8 (Debian's `zookeeper`, standalone)
  run as our own processes on free loopback ports, data in a temp directory; they are installed with
  apt-get when missing and we are root, and skipped with one line otherwise;
* failover, lease / TTL / session timeout 2 s, 3 candidate processes per system, --trials crash
  (SIGKILL of the leader) and graceful (SIGTERM: fencekeeper hands its lease over, the etcd candidate
  revokes its lease, the ZooKeeper one closes its session) trials each, timed from the signal to the new
  leader's first accepted fenced write; fencekeeper also at 500 and 250 ms, which the others cannot do
  (etcd's TTLs are whole seconds, 2 s at least with its default election timeout);
* write throughput with --clients concurrent clients, fenced and plain, fencekeeper on PostgreSQL
  against etcd (bench/peers/throughput.py);
* one table (rich here; Markdown between the markers of docs/benchmarks.md, unless --quick or
  --no-write-docs) with every figure and the ratio fencekeeper / peer.

Every process it starts is stopped at the end, also on errors, ^C and SIGTERM; the temp directory goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from bench import failover
from bench.failover import CRASH, GRACEFUL, alternate_trials
from bench.peers import throughput
from bench.peers.candidate import Gateway
from bench.peers.candidates import CandidateGroup
from bench.peers.recipes import b64, prefix_end
from bench.peers.report import (
    ETCD,
    FENCEKEEPER,
    ZOOKEEPER,
    Rate,
    Row,
    Stat,
    markdown,
    replace_section,
    rich_table,
)
from bench.peers.servers import EtcdCluster, ZooKeeperServer, install_missing
from bench.storage_write import _pg_version

ROOT = Path(__file__).resolve().parents[2]

TTL_S = 2
WRITE_INTERVAL_MS = 20.0  # the fenced writes of every leader, as fencekeeper's counter workload writes
KIND_LABEL = {CRASH: "crash failover (SIGKILL)", GRACEFUL: "graceful handover"}


def candidate_argv(system: str, ident: str, log: Path, *args: str) -> list[str]:
    """The command line of one candidate process (bench/peers/candidate.py)."""
    return [
        sys.executable,
        "-m",
        "bench.peers.candidate",
        system,
        *args,
        "--id",
        ident,
        "--log",
        str(log),
        "--ttl",
        str(TTL_S),
        "--interval-ms",
        str(WRITE_INTERVAL_MS),
    ]


def revision() -> str:
    """Which fencekeeper was measured: the commit, and whether the code had uncommitted changes (others'
    work in progress); FENCEKEEPER_REVISION names it where there is no .git (a `git archive` copy)."""
    git = ["git", "-C", str(ROOT)]
    try:
        sha = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        code = ["--", "elector", "fencekeeper", "storage_service"]
        dirty = subprocess.run(
            [*git, "status", "--porcelain", *code], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("FENCEKEEPER_REVISION", "an unknown revision")
    return f"commit {sha.stdout.strip()}" + (" with uncommitted changes" if dirty.stdout.strip() else "")


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


async def fencekeeper_failover(
    lease_ms: int, args: argparse.Namespace, tmp: Path, rng: random.Random, console: Console
) -> dict[str, Any]:
    """bench/failover.py's bench at one lease: three nodes, SQLite storage with quorum tokens."""
    bench = failover.Bench(
        lease_ms, f"peers-{lease_ms}ms", tmp / f"fk-{lease_ms}", None, WRITE_INTERVAL_MS, console
    )
    bench.dir.mkdir()
    try:
        await bench.start()
        trials = await alternate_trials(bench, args.trials, rng, console, f"fencekeeper, lease {lease_ms} ms")
        check = await bench.check_history()
    finally:
        await bench.stop()
    if not (check["epochs_monotonic"] and check["counter_contiguous"]):
        raise RuntimeError(f"fencekeeper's storage history is not safe: {check}")
    return {"trials": trials, "check": check}


async def etcd_arms(
    args: argparse.Namespace, tmp: Path, rng: random.Random, console: Console, say: Callable[[str], None]
) -> dict[str, Any]:
    """The etcd cluster, its election trials, then the write throughput against fencekeeper's."""
    directory = tmp / "etcd"
    directory.mkdir()
    cluster = EtcdCluster(directory)
    prefix = "/election/bench/"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        gateway = Gateway(session, cluster.endpoints[0])

        async def contenders() -> int:
            answer = await gateway.call(
                "/v3/kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix), "count_only": True}
            )
            return int(answer.get("count", 0))

        def command(ident: str, log: Path) -> list[str]:
            endpoint = cluster.endpoints[int(ident[1:]) - 1]  # c1 talks to e0, ...: the load spreads
            return candidate_argv("etcd", ident, log, "--endpoint", endpoint, "--prefix", prefix)

        group = CandidateGroup("etcd", directory, command, contenders, renew_s=TTL_S / 3)
        try:
            await cluster.start()
            say(f"etcd cluster on {', '.join(cluster.endpoints)}")
            await group.start()
            trials = await alternate_trials(group, args.trials, rng, console, f"etcd, TTL {TTL_S} s")
            group.stop()
            pids = [m.proc.pid for m in cluster.members if m.proc is not None]
            writes = await throughput.measure(cluster.endpoints, pids, args, console)
        finally:
            group.stop()
            cluster.stop()
    return {"trials": trials, "writes": writes, "unexpected_exits": group.unexpected_exits}


async def zookeeper_arms(
    args: argparse.Namespace, tmp: Path, rng: random.Random, console: Console, say: Callable[[str], None]
) -> dict[str, Any]:
    """The ZooKeeper server and its election trials (kazoo's Election recipe)."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    directory = tmp / "zookeeper"
    directory.mkdir()
    server = ZooKeeperServer(directory)
    path = "/election/bench"
    observer = KazooClient(hosts=server.hosts, timeout=10)

    async def contenders() -> int:
        try:
            return len(await asyncio.to_thread(observer.get_children, path))
        except NoNodeError:
            return 0

    def command(ident: str, log: Path) -> list[str]:
        return candidate_argv("zk", ident, log, "--hosts", server.hosts, "--path", path)

    group = CandidateGroup("zookeeper", directory, command, contenders, renew_s=TTL_S / 3)
    try:
        await server.start()
        say(f"zookeeper on {server.hosts}")
        await asyncio.to_thread(observer.start, 15)
        await group.start()
        trials = await alternate_trials(group, args.trials, rng, console, f"zookeeper, session {TTL_S} s")
    finally:
        group.stop()
        observer.stop()
        observer.close()
        server.stop()
    return {"trials": trials, "unexpected_exits": group.unexpected_exits}


def stats(trials: list[dict[str, Any]], kind: str) -> Stat:
    """The figures of one kind of trial; void trials (the leader had changed before the signal) timed
    no failover and are left out."""
    return Stat.of([t["ms"] for t in trials if t["kind"] == kind and not t.get("void")])


def rate(figures: dict[str, Any]) -> Rate:
    return Rate(figures["writes_per_s"], figures["p50_ms"], figures["p99_ms"], figures["errors"])


def rows(result: dict[str, Any], clients: int) -> list[Row]:
    """The table: failover at 2 s on every system, fencekeeper's shorter leases, then the writes."""
    fk = result["fencekeeper"]
    peers = {ETCD: result.get("etcd"), ZOOKEEPER: result.get("zookeeper")}
    out = []
    for kind in (CRASH, GRACEFUL):
        at_2s = {FENCEKEEPER: stats(fk["2000"]["trials"], kind)}
        at_2s |= {peer: stats(r["trials"], kind) for peer, r in peers.items() if r}
        out.append(Row(f"{KIND_LABEL[kind]}, lease/TTL 2 s: ms min / median / p99", at_2s))
        for lease in result["config"]["short_leases_ms"]:
            against = {peer: fig for peer, fig in at_2s.items() if peer != FENCEKEEPER}
            measure = f"{KIND_LABEL[kind]}, fencekeeper lease {lease} ms"
            out.append(Row(measure, {FENCEKEEPER: stats(fk[str(lease)]["trials"], kind)}, against))
    writes = (result.get("etcd") or {}).get("writes")
    if writes:
        fenced = "fenced writes, {c} clients (REST PUT with token / txn on the election key's revision)"
        plain = "plain writes, {c} clients (REST PUT `--fencing off` / put)"
        for measure, ours, theirs in (
            (fenced, throughput.FK_FENCED, throughput.ETCD_FENCED),
            (plain, throughput.FK_PLAIN, throughput.ETCD_PLAIN),
        ):
            out.append(
                Row(measure.format(c=clients), {FENCEKEEPER: rate(writes[ours]), ETCD: rate(writes[theirs])})
            )
    return out


def preface(result: dict[str, Any]) -> str:
    c = result["config"]
    skipped = "".join(f" {peer} skipped: {why}." for peer, why in result["skipped"].items())
    writes = (result.get("etcd") or {}).get("writes", {})
    other = [arm["other_cores"] for arm in writes.values()]
    busy = f" Other work used {min(other):.2f}–{max(other):.2f} cores during the write arms." if other else ""
    void = sum(1 for r in result["fencekeeper"].values() for t in r["trials"] if t.get("void"))
    void += sum(1 for p in ("etcd", "zookeeper") if p in result for t in result[p]["trials"] if t.get("void"))
    voids = f" Void trials (the leader had changed before the signal; left out): {void}."
    exits = "".join(
        f" {peer} candidates that ended on their own (restarted): {len(result[peer]['unexpected_exits'])}."
        for peer in ("etcd", "zookeeper")
        if peer in result
    )
    return (
        f"{result['date']}, `{result['command']}`, fencekeeper at {result['revision']}: "
        f"{c['trials']} trials per kind and system, 3 candidate processes each, a fenced write every "
        f"{WRITE_INTERVAL_MS:.0f} ms while leading; fencekeeper's storage on SQLite with quorum tokens for "
        f"failover, on PostgreSQL {c['pg_version']} for the writes; writes: {c['rounds']} alternating "
        f"rounds x {c['seconds']:g} s per arm, {c['clients']} clients, {c['keys']} keys, "
        f"{c['value_size']}-byte values. {result['machine']}; load average (1/5/15 min) "
        f"{result['load_before']} before, {result['load_after']} after; took {result['took_s'] / 60:.1f} min."
        f"{busy}{voids}{exits}{skipped}"
    )


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    def say(line: str) -> None:
        console.print(line, highlight=False)

    started = time.monotonic()
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python -m bench.peers", *args.argv]),
        "revision": revision(),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "load_before": load(),
        "config": {
            "trials": args.trials,
            "short_leases_ms": args.lease_ms,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "clients": args.clients,
            "keys": args.keys,
            "value_size": args.value_size,
            "pg_version": await _pg_version(args.pg),
        },
        "skipped": install_missing(say),
    }
    for peer, why in result["skipped"].items():
        say(f"[yellow]skipping {peer}: {why}[/]")
    if len(result["skipped"]) == 2:
        return result
    tmp = Path(tempfile.mkdtemp(prefix="fencekeeper-peers-"))
    args.tmp = tmp
    try:
        result["fencekeeper"] = {
            str(lease): await fencekeeper_failover(lease, args, tmp, rng, console)
            for lease in (TTL_S * 1000, *args.lease_ms)
        }
        if "etcd" not in result["skipped"]:
            result["etcd"] = await etcd_arms(args, tmp, rng, console, say)
        if "zookeeper" not in result["skipped"]:
            result["zookeeper"] = await zookeeper_arms(args, tmp, rng, console, say)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_after"] = load()
    result["took_s"] = round(time.monotonic() - started)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 trials, 1 round of 3 s: under two minutes")
    p.add_argument("--trials", type=int, help="trials per kind and system (default 20; quick 2)")
    p.add_argument("--lease-ms", type=int, action="append", help="fencekeeper's shorter leases (500, 250)")
    p.add_argument("--rounds", type=int, help="write rounds per arm (default 3; quick 1)")
    p.add_argument("--seconds", type=float, help="measured seconds per write round (default 10; quick 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before each write round")
    p.add_argument("--clients", type=int, default=64, help="concurrent writers (default 64)")
    p.add_argument("--keys", type=int, default=64, help="keys written at random (default 64)")
    p.add_argument("--value-size", type=int, default=128, help="bytes per write (default 128)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each write round wait up to this many seconds for the machine to be idle (default 0)",
    )
    p.add_argument(
        "--pg",
        default=os.environ.get("FENCEKEEPER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server for fencekeeper's writes, without a database (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the signal phases")
    p.add_argument(
        "--write-docs",
        action=argparse.BooleanOptionalAction,
        help="rewrite the peers section of docs/benchmarks.md (default: yes, except with --quick)",
    )
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md", help=argparse.SUPPRESS)
    p.add_argument("--json", help="write every figure, trials included, here")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.trials = args.trials or (2 if args.quick else 20)
    args.lease_ms = args.lease_ms or [500, 250]
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    if args.quick:
        args.warmup = min(args.warmup, 0.5)
    if args.write_docs is None:
        args.write_docs = not args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    # The candidates run as `python -m bench.peers.candidate`, from wherever this was started.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    signal.signal(signal.SIGTERM, failover._interrupt)
    try:
        result = asyncio.run(run(args, console))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    finally:
        for proc in failover.RUNNING:  # last resort: fencekeeper processes a failed start left behind
            proc.kill()
    if "fencekeeper" not in result:
        return 0  # both peers skipped, said above
    peers = [name for name, key in ((ETCD, "etcd"), (ZOOKEEPER, "zookeeper")) if key in result]
    table = rows(result, args.clients)
    result["preface"] = preface(result)
    result["markdown"] = markdown(table, peers)
    console.print(rich_table(table, peers, "fencekeeper against etcd and ZooKeeper"))
    console.print(result["preface"], highlight=False)
    console.print("\n" + result["markdown"], markup=False, highlight=False)
    if args.write_docs:
        args.docs.write_text(
            replace_section(args.docs.read_text(), result["preface"] + "\n\n" + result["markdown"])
        )
        console.print(f"written into {args.docs}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0
