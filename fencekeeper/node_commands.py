"""`fencekeeper node run|status`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.table import Table

from elector import cluster as cluster_file
from elector.cluster import Cluster, ClusterFileError
from elector.node.runtime import Node, drifting_clock, monotonic_ms
from elector.node.server import create_node_app
from elector.workload import run_counter
from fencekeeper.cli import CliError, open_log
from storage_service.names import KEY_MAX_LENGTH, KEY_RE

GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a group is named like its storage namespace


def run(args: argparse.Namespace) -> int:
    return {"run": run_node, "status": status}[args.node_command](args)


def _cluster(path: str) -> Cluster:
    try:
        return cluster_file.load(path)
    except ClusterFileError as exc:
        raise CliError(str(exc)) from None


def workload_groups(args: argparse.Namespace) -> list[str]:
    """The groups, once --group, --storage and --workload-key are known to be usable (`node run` and
    `workload` take the same three)."""
    groups = args.groups or ["default"]
    for group in groups:
        if not GROUP_RE.fullmatch(group):
            raise CliError(
                f"--group {group!r}: use 1-128 of A-Z a-z 0-9 . _ - (it names a storage namespace)"
            )
    if args.storage is not None and not args.storage.startswith(("http://", "https://")):
        raise CliError(f"--storage must be an http:// or https:// URL (got {args.storage!r})")
    if len(args.workload_key) > KEY_MAX_LENGTH or not KEY_RE.fullmatch(args.workload_key):
        raise CliError(f"--workload-key {args.workload_key!r} is not a storage key (A-Z a-z 0-9 . _ ~ - /)")
    return groups


def run_node(args: argparse.Namespace) -> int:
    cluster = _cluster(args.cluster)
    groups = workload_groups(args)
    try:
        member = cluster.member(args.id)
        clock = monotonic_ms if args.clock_rate == 1.0 else drifting_clock(args.clock_rate)
        node = Node(cluster, args.id, groups, args.data_dir, clock=clock, clock_rate=args.clock_rate)
    except (ClusterFileError, KeyError) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    except OSError as exc:
        raise CliError(f"cannot use --data-dir {args.data_dir}: {exc.strerror}") from None
    _check_voter_state(node, args.data_dir)
    host, _, port = member.address.rpartition(":")
    listen = args.listen or host
    try:
        sock = socket.create_server((listen, int(port)))
    except OSError as exc:
        raise CliError(f"cannot listen on {listen}:{port} (member {args.id}): {exc.strerror}") from None
    open_log(args.log_file)
    app = create_node_app(node)
    if args.storage:
        app.cleanup_ctx.append(_workload(node, args.storage, args.workload_key, args.write_interval_ms))
    # A short graceful shutdown: the lease is handed over first (on_shutdown), and peers' connections
    # are closed by the stopping node, so nothing is left worth waiting for.
    web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=2.0)
    return 0


def _check_voter_state(node: Node, data_dir: str) -> None:
    """Fail now, not at the first grant: a voter that cannot keep its promises must not vote."""
    if not os.access(node.store.dir, os.W_OK | os.X_OK):
        raise CliError(f"cannot use --data-dir {data_dir}: not writable by this user")
    try:
        node.store.load()
    except OSError as exc:
        raise CliError(f"cannot read {node.store.path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(
            f"{node.store.path} is damaged ({exc!r}); do not delete it: a voter without its promises "
            "could grant an epoch twice (docs/deploy.md)"
        ) from None


def _workload(
    node: Node, storage_url: str, key: str, interval_ms: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The counter workload, one task per group: started once the node runs, cancelled at shutdown.

    Appended after the node's own cleanup_ctx entry, it starts after `node.start()`. At shutdown the node
    hands its leases over first (on_shutdown), which sets `lease.lost`: the workload stops writing then,
    and is cancelled a moment later.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(
                run_counter(node, group, storage_url, key=key, interval_ms=interval_ms),
                name=f"{node.id}-workload-{group}",
            )
            for group in node.groups
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context


def status(args: argparse.Namespace) -> int:
    cluster = _cluster(args.cluster)

    async def ask(session: aiohttp.ClientSession, url: str) -> dict | str:
        try:
            async with session.get(url + "/v1/groups") as resp:
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"unreachable ({type(exc).__name__})"

    async def gather() -> list[dict | str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            return await asyncio.gather(*(ask(session, m.url) for m in cluster.members))

    answers = asyncio.run(gather())
    table = Table(title=f"cluster {cluster.id}")
    for column in ("member", "address", "group", "role", "leader", "epoch", "lease left (ms)"):
        table.add_column(column)
    for member, answer in zip(cluster.members, answers, strict=True):
        if isinstance(answer, str):
            table.add_row(member.id, member.address, "", answer, "", "", "")
            continue
        for view in answer["groups"]:
            table.add_row(
                member.id,
                member.address,
                view["group"],
                view["role"],
                view["leader"] or "-",
                str(view["epoch"]),
                f"{view['lease_remaining_ms']:.0f}",
            )
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0
