"""`fencekeeper workload`: the counter workload as a program of its own, writing through whichever node
leads (the nodes' local API hands out the token; see elector/sidecar.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import aiohttp

from elector.sidecar import RemoteLeader
from elector.workload import run_counter
from fencekeeper.cli import CliError, open_log
from fencekeeper.node_commands import workload_groups


def run(args: argparse.Namespace) -> int:
    groups = workload_groups(args)
    for url in args.nodes:
        if not url.startswith(("http://", "https://")):
            raise CliError(f"--node must be an http:// or https:// URL (got {url!r})")
    open_log(args.log_file)
    asyncio.run(_run(args, groups))
    return 0


async def _run(args: argparse.Namespace, groups: list[str]) -> None:
    """One counter per group until SIGTERM or SIGINT (a container's stop), then exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Token requests are answered from the node's memory: a node slower than this is down, paused or cut
    # off, and every round of asking waits for the slowest node.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        leader = RemoteLeader(args.nodes, session, name=args.writer)
        tasks = [
            asyncio.create_task(
                run_counter(
                    leader, group, args.storage, key=args.workload_key, interval_ms=args.write_interval_ms
                ),
                name=f"workload-{group}",
            )
            for group in groups
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
