"""One candidate process of a peer's election recipe, as its users would write it.

    python -m bench.peers.candidate etcd --endpoint URL --prefix /election/bench/ --id c1 --log c1.log
    python -m bench.peers.candidate zk --hosts 127.0.0.1:PORT --path /election/bench --id c1 --log c1.log

It campaigns, and while it leads writes every --interval-ms with its fencing token (a fenced write), as
fencekeeper's counter workload does. SIGTERM is the graceful handover: etcd revokes its lease (which
deletes its key: the resign), ZooKeeper closes its session (which deletes its ephemeral znode). It logs
JSON lines the bench reads: `queued`, `elected` (with the token), the first writes accepted at each
token, `lost`; `ts` is the machine's realtime clock, the one the bench signals on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.peers.recipes import (
    b64,
    campaign_txn,
    created_revision,
    fenced_put_txn,
    predecessor,
    prefix_end,
    transaction_ok,
)

LOGGED_WRITES = 3  # writes logged per token: enough to time the first and to see writes flow


class EventLog:
    """JSON lines, one write() each so the bench never reads half a line; thread-safe for kazoo."""

    def __init__(self, path: Path, ident: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.ident = ident
        self.lock = threading.Lock()
        self.writes: dict[int, int] = {}

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": time.time(), "event": event, "id": self.ident, **fields}) + "\n"
        with self.lock:
            os.write(self.fd, line.encode())

    def wrote(self, token: int) -> None:
        """An accepted write at `token`; only the first few are logged, to keep the file small."""
        count = self.writes.get(token, 0) + 1
        self.writes[token] = count
        if count <= LOGGED_WRITES:
            self.emit("write", token=token)


class Gateway:
    """etcd's v3 JSON gateway (grpc-gateway): POST the protobuf request as JSON, int64s as strings."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str) -> None:
        self.session = session
        self.endpoint = endpoint.rstrip("/")

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.endpoint + path, json=body) as resp:
            answer = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"etcd {path}: {resp.status} {answer}")
            return answer

    async def grant(self, ttl: int) -> int:
        return int((await self.call("/v3/lease/grant", {"TTL": ttl}))["ID"])

    async def keepalive(self, lease: int) -> int:
        """The lease's renewed TTL, 0 once it has expired (the gateway sends one answer per request)."""
        answer = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    async def txn(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("/v3/kv/txn", body)

    async def put(self, key: str, value: bytes) -> None:
        await self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    async def range_prefix(self, prefix: str) -> tuple[list[dict[str, Any]], int]:
        """The keys under `prefix` and the revision they were read at."""
        answer = await self.call("/v3/kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix)})
        return answer.get("kvs", []), int(answer["header"]["revision"])

    async def wait_delete(self, key_b64: str, after_revision: int) -> None:
        """Watch one key from `after_revision` + 1 until it is deleted (the watch streams JSON lines)."""
        body = {"create_request": {"key": key_b64, "start_revision": str(after_revision + 1)}}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.session.post(self.endpoint + "/v3/watch", json=body, timeout=timeout) as resp:
            async for line in resp.content:
                events = json.loads(line).get("result", {}).get("events", [])
                if any(e.get("type") == "DELETE" for e in events):
                    return


async def etcd_candidate(args: argparse.Namespace, log: EventLog) -> int:
    """The concurrency.Election recipe: lease, key under the prefix, wait for the keys ahead, lead."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        gw = Gateway(session, args.endpoint)
        lease = await gw.grant(args.ttl)
        lost = asyncio.Event()

        async def keep_alive() -> None:
            while True:  # clientv3 renews every TTL/3, and retries a renewal that failed
                await asyncio.sleep(args.ttl / 3)
                try:
                    ttl = await gw.keepalive(lease)
                except (aiohttp.ClientError, TimeoutError):
                    continue
                if ttl <= 0:
                    log.emit("lost", why="lease expired")
                    lost.set()
                    return

        renewals = asyncio.create_task(keep_alive())
        key = f"{args.prefix}{lease:x}"
        token = created_revision(await gw.txn(campaign_txn(key, args.id, lease)))
        log.emit("queued", token=token)

        async def lead() -> None:
            while True:
                kvs, revision = await gw.range_prefix(args.prefix)
                ahead = predecessor(kvs, token)
                if ahead is None:
                    break
                await gw.wait_delete(ahead, revision)
            log.emit("elected", token=token)
            value = args.id.encode()
            while True:
                answer = await gw.txn(fenced_put_txn(key, token, args.data_key, value))
                if not answer.get("succeeded"):
                    log.emit("lost", token=token, why="fenced write refused")
                    return
                log.wrote(token)
                await asyncio.sleep(args.interval_ms / 1000)

        leading = asyncio.create_task(lead())
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait()), leading]
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in [*waits, renewals]:
            task.cancel()
        if stop.is_set():
            await gw.revoke(lease)  # the resign: the key goes with the lease, the next candidate leads
            log.emit("resigned", token=token)
            return 0
        if leading in done:
            leading.result()  # raises what stopped it (an error), else it lost its key
        return 3


def zk_candidate(args: argparse.Namespace, log: EventLog) -> int:
    """kazoo's Election recipe; the winner's znode czxid is its fencing token."""
    from kazoo.client import KazooClient  # the `peers` extra, only where a candidate runs

    client = KazooClient(hosts=args.hosts, timeout=args.ttl)
    client.start(timeout=15)

    def close_session(signum: int, frame: Any) -> None:
        """The graceful handover: closing the session deletes the ephemeral znode at once."""
        client.stop()
        client.close()
        log.emit("resigned")
        os._exit(0)

    signal.signal(signal.SIGTERM, close_session)
    election = client.Election(args.path, args.id)

    def lead() -> None:
        node = f"{election.lock.path}/{election.lock.node}"
        stat = client.exists(node)
        token = stat.czxid
        log.emit("elected", token=token)
        value = args.id.encode()
        while True:
            tx = client.transaction()
            tx.check(node, stat.version)
            tx.set_data(args.data_key, value)
            if not transaction_ok(tx.commit()):
                log.emit("lost", token=token, why="fenced write refused")
                return
            log.wrote(token)
            time.sleep(args.interval_ms / 1000)

    client.ensure_path(args.data_key)
    log.emit("queued")
    election.run(lead)
    client.stop()
    return 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="system", required=True)
    etcd = sub.add_parser("etcd")
    etcd.add_argument("--endpoint", required=True, help="a member's client URL")
    etcd.add_argument("--prefix", required=True, help="the election prefix (ends in /)")
    etcd.add_argument("--data-key", default="/bench/data")
    zk = sub.add_parser("zk")
    zk.add_argument("--hosts", required=True)
    zk.add_argument("--path", required=True, help="the election znode")
    zk.add_argument("--data-key", default="/bench/data")
    for each in (etcd, zk):
        each.add_argument("--id", required=True)
        each.add_argument("--log", required=True, type=Path)
        each.add_argument("--ttl", type=int, default=2, help="lease TTL / session timeout, seconds")
        each.add_argument("--interval-ms", type=float, default=20.0, help="fenced write interval")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = EventLog(args.log, args.id)
    if args.system == "etcd":
        return asyncio.run(etcd_candidate(args, log))
    return zk_candidate(args, log)


if __name__ == "__main__":
    sys.exit(main())
