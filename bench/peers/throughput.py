"""Write throughput with concurrent clients: fencekeeper's REST PUT against etcd's transaction, fenced and
plain, in alternating rounds of the same length.

fencekeeper runs as bench/storage_write.py runs it (its servers, writers and rounds are reused from
there): two `storage serve` processes on a throwaway PostgreSQL database, `--fencing on` (PUT with a
`Fencing-Token`) and `--fencing off` (the same PUT without the check). etcd gets the same number of
clients, keys and value size: a transaction comparing the election key's create revision, then putting
(the fenced write of etcd's recipe), and a plain put; the clients spread over the three members' JSON
gateways, as clientv3 balances over its endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from yarl import URL

from bench.peers.candidate import Gateway
from bench.peers.recipes import b64, campaign_txn, created_revision, fenced_put_txn
from bench.storage_write import (
    Arm,
    CpuSnapshot,
    Fence,
    Server,
    _pct_ms,
    _raise_fence,
    _round,
    _wait_quiet,
    create_database,
    drop_database,
)
from fencekeeper.processes import free_port

FK_FENCED, FK_PLAIN, ETCD_FENCED, ETCD_PLAIN = "fk fenced", "fk plain", "etcd fenced", "etcd plain"


@dataclass
class EtcdArm:
    """One etcd arm: a request body per key, sent by the writers to the member they are bound to."""

    name: str
    path: str
    bodies: list[bytes]
    rounds: list[dict[str, Any]] = field(default_factory=list)


async def _etcd_writer(
    session: aiohttp.ClientSession, url: str, arm: EtcdArm, window: tuple[float, float], rng: random.Random
) -> tuple[list[float], int]:
    """Write until the window ends; the latencies of the writes accepted inside it, and the errors."""
    start, end = window
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json"}
    fenced = arm.name == ETCD_FENCED
    while (t0 := time.perf_counter()) < end:
        body = arm.bodies[rng.randrange(len(arm.bodies))]
        async with session.post(url, data=body, headers=headers) as resp:
            answer = await resp.read()
        t1 = time.perf_counter()
        ok = resp.status == 200 and (not fenced or json.loads(answer).get("succeeded") is True)
        if start <= t1 < end:
            if ok:
                latencies.append(t1 - t0)
            else:
                errors += 1
    return latencies, errors


async def _etcd_round(
    arm: EtcdArm,
    session: aiohttp.ClientSession,
    endpoints: list[str],
    pids: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    now = time.perf_counter()
    window = (now + args.warmup, now + args.warmup + args.seconds)
    rng = random.Random(len(arm.rounds))
    writers = [
        asyncio.create_task(
            _etcd_writer(
                session, endpoints[i % len(endpoints)] + arm.path, arm, window, random.Random(rng.random())
            )
        )
        for i in range(args.clients)
    ]
    await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
    before = CpuSnapshot.take(pids, None, [])
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    after = CpuSnapshot.take(pids, None, [])
    done = await asyncio.wait_for(asyncio.gather(*writers), timeout=60)
    latencies = [x for lat, _ in done for x in lat]
    return {
        "seconds": args.seconds,
        "writes": len(latencies),
        "errors": sum(errors for _, errors in done),
        "latencies": latencies,
        "cpu_cores": after.cores_since(before),
    }


def _session(limit: int) -> aiohttp.ClientSession:
    """A client session as bench/storage_write.py's writers use (no per-request timer, no cookies,
    compression or User-Agent), so that both systems' clients cost the same per request."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=None),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's rounds as one figure: writes per second over all its measured time, pooled latencies,
    and the CPU (cores) the servers (PostgreSQL included) and everything else used meanwhile."""
    seconds = sum(r["seconds"] for r in rounds)
    latencies = [x for r in rounds for x in r["latencies"]]
    cores = {
        k: sum(r["cpu_cores"][k] * r["seconds"] for r in rounds) / seconds
        for k in ("server", "postgres", "other")
    }
    return {
        "writes_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": _pct_ms(latencies, 50),
        "p99_ms": _pct_ms(latencies, 99),
        "errors": sum(r["errors"] for r in rounds),
        "server_cores": round(cores["server"] + cores["postgres"], 2),
        "other_cores": round(cores["other"], 2),
        "rounds_per_s": [round(r["writes"] / r["seconds"]) for r in rounds],
    }


async def measure(
    endpoints: list[str], etcd_pids: list[int], args: argparse.Namespace, console: Console
) -> dict[str, dict[str, Any]]:
    """Every arm, alternating for --rounds rounds; each arm's combined figures by name."""
    db, db_url, args.postmaster = await create_database(args.pg, "fk_peers")
    log_dir = Path(tempfile.mkdtemp(prefix="fk-peers-write-", dir=args.tmp))
    servers = [
        Server(fencing, free_port(), log_dir, db_url, ["--pool-size", "20"]) for fencing in (True, False)
    ]
    limit = args.clients + 8
    session = _session(limit)  # the etcd arms' and the control requests'
    context = multiprocessing.get_context("spawn")
    fk_arms: list[Arm] = []
    lease = None
    gateway = Gateway(session, endpoints[0])
    try:
        for server in servers:  # one at a time: each runs the migrations at start
            await server.start(session)
        value = random.Random(7).randbytes(args.value_size)
        keys = [f"/bench/k{i:03d}" for i in range(args.keys)]
        for name, server in zip((FK_FENCED, FK_PLAIN), servers, strict=True):
            namespace = name.replace(" ", "-")
            arm = Arm(name, server, namespace, Fence(context), raises=False, session=_session(limit))
            arm.urls = [
                URL(f"{server.base}/v1/namespaces/{namespace}/objects/k{i:03d}", encoded=True)
                for i in range(args.keys)
            ]
            status, _, body = await _raise_fence(session, server.base, namespace, 1)
            if status != 200:
                raise RuntimeError(f"cannot raise the fence of {namespace}: {status} {body}")
            arm.fence.set(1)
            fk_arms.append(arm)
        lease = await gateway.grant(3600)  # a leader's lease, long enough that it needs no renewal here
        election_key = f"/bench-election/{lease:x}"
        token = created_revision(await gateway.txn(campaign_txn(election_key, "writer", lease)))
        etcd_arms = [
            EtcdArm(
                ETCD_FENCED,
                "/v3/kv/txn",
                [json.dumps(fenced_put_txn(election_key, token, key, value)).encode() for key in keys],
            ),
            EtcdArm(
                ETCD_PLAIN,
                "/v3/kv/put",
                [json.dumps({"key": b64(key), "value": b64(value)}).encode() for key in keys],
            ),
        ]
        for number in range(args.rounds):
            for arm in (*fk_arms, *etcd_arms):
                if args.wait_quiet:
                    await _wait_quiet(args.wait_quiet, console)
                if isinstance(arm, EtcdArm):
                    result = await _etcd_round(arm, session, endpoints, etcd_pids, args)
                else:
                    result = await _round(arm, args, None)
                arm.rounds.append(result)
                console.print(
                    f"writes, round {number + 1}/{args.rounds}, {arm.name}: "
                    f"{result['writes'] / result['seconds']:,.0f}/s "
                    f"(other load {result['cpu_cores']['other']:.2f} cores)"
                )
        return {arm.name: combine(arm.rounds) for arm in (*fk_arms, *etcd_arms)}
    finally:
        if lease is not None:
            await gateway.revoke(lease)
        await session.close()
        for arm in fk_arms:
            if arm.session is not None:
                await arm.session.close()
        for server in servers:
            server.stop()
        await drop_database(args.pg, db)
