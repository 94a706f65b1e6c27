"""`fencekeeper node run|status`."""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.table import Table

from elector import cluster as cluster_file
from elector.cluster import Cluster, ClusterFileError
from elector.node.runtime import Node
from elector.node.server import create_node_app
from fencekeeper.cli import CliError
from storage_service.logs import configure_logging

GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a group is named like its storage namespace


def run(args: argparse.Namespace) -> int:
    return {"run": run_node, "status": status}[args.node_command](args)


def _cluster(path: str) -> Cluster:
    try:
        return cluster_file.load(path)
    except ClusterFileError as exc:
        raise CliError(str(exc)) from None


def run_node(args: argparse.Namespace) -> int:
    cluster = _cluster(args.cluster)
    groups = args.groups or ["default"]
    for group in groups:
        if not GROUP_RE.fullmatch(group):
            raise CliError(
                f"--group {group!r}: use 1-128 of A-Z a-z 0-9 . _ - (it names a storage namespace)"
            )
    try:
        member = cluster.member(args.id)
        node = Node(cluster, args.id, groups, args.data_dir)
    except (ClusterFileError, KeyError) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    except OSError as exc:
        raise CliError(f"cannot use --data-dir {args.data_dir}: {exc.strerror}") from None
    host, _, port = member.address.rpartition(":")
    try:
        sock = socket.create_server((host, int(port)))
    except OSError as exc:
        raise CliError(f"cannot listen on {member.address} (member {args.id}): {exc.strerror}") from None
    configure_logging(args.log_file)
    web.run_app(create_node_app(node), sock=sock, print=None, access_log=None)
    return 0


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
