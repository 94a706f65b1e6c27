"""The `fencekeeper` command line. Every bad input ends in one plain line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from storage_service.db import DEFAULT_DB_URL


class CliError(Exception):
    """A user-facing failure: printed as one line, no traceback."""


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value!r}")
    return int(value)


def _size(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    number, unit = (value[:-1], value[-1].lower()) if value[-1:].lower() in units else (value, "")
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"not a size such as 1048576, 512k or 1m: {value!r}")
    return int(number) * units.get(unit, 1)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number: {value!r}")
    return number


def _db_url(value: str) -> str:
    if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise argparse.ArgumentTypeError(
            f"--db must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (got {value!r})"
        )
    try:
        url = make_url(value)
        url.port  # noqa: B018 - parsing the port is the check
    except (ArgumentError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--db {value!r} is not a valid database URL: {exc}") from None
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"--db {value!r}: the folder {folder} does not exist")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one plain line, not the usage block
        self.exit(2, f"fencekeeper: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fencekeeper", description="Split-brain-proof leadership with fenced storage.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    storage = commands.add_parser("storage", help="the fenced storage service")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)

    serve = storage_commands.add_parser("serve", help="serve the REST API")
    serve.add_argument(
        "--db", type=_db_url, default=DEFAULT_DB_URL, help="database URL (default: %(default)s)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8080)
    serve.add_argument(
        "--token-verify",
        choices=["none", "quorum"],
        default="none",
        help="none: the token is a plain epoch; quorum: an elector token signed by a majority of voters",
    )
    serve.add_argument(
        "--cluster", help="cluster.toml whose voter keys are trusted (with --token-verify quorum)"
    )
    serve.add_argument("--fencing", choices=["on", "off"], default="on", help="off: the control arm only")
    serve.add_argument("--log-file", help="write JSON log lines here instead of stderr")
    serve.add_argument("--no-migrate", action="store_true", help="do not run migrations at start")
    serve.add_argument("--max-body", type=_size, default="1m", help="largest accepted body (default 1m)")
    serve.add_argument("--pool-size", type=int, default=20, help="database connections (PostgreSQL)")

    migrate = storage_commands.add_parser("migrate", help="run the database migrations and exit")
    migrate.add_argument("--db", type=_db_url, default=DEFAULT_DB_URL)
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--downgrade", action="store_true", help="migrate down to --revision instead")

    audit = storage_commands.add_parser("audit", help="print the rejected writes as a table")
    audit.add_argument("--db", type=_db_url, default=DEFAULT_DB_URL)
    audit.add_argument("--namespace", help="only this namespace")
    audit.add_argument("--limit", type=int, default=1000)

    cluster = commands.add_parser("cluster", help="cluster files")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    init = cluster_commands.add_parser("init", help="write cluster.toml and one private key per member")
    init.add_argument("--nodes", type=int, default=3, help="members (default 3)")
    init.add_argument("--out", required=True, help="directory to write into")
    init.add_argument("--host", default="127.0.0.1")
    init.add_argument("--base-port", type=_port, default=7100, help="port of n1; n2 gets the next, ...")
    init.add_argument("--lease-ms", type=int, default=2000, help="lease length (default 2000)")

    node = commands.add_parser("node", help="elector nodes")
    node_commands = node.add_subparsers(dest="node_command", required=True)
    run = node_commands.add_parser("run", help="run a voter and a candidate per group")
    run.add_argument("--cluster", required=True, help="cluster.toml from `fencekeeper cluster init`")
    run.add_argument("--id", required=True, help="this member's id (n1, n2, ...)")
    run.add_argument("--data-dir", required=True, help="where the voter keeps its promises (fsynced)")
    run.add_argument(
        "--group", action="append", dest="groups", help="an election group (= storage namespace); repeatable"
    )
    run.add_argument("--log-file", help="write JSON log lines here instead of stderr")
    run.add_argument(
        "--storage",
        metavar="URL",
        help="run the counter workload against this storage service while leading (each group = namespace)",
    )
    run.add_argument("--workload-key", default="counter", help="the workload's counter key (default counter)")
    run.add_argument(
        "--write-interval-ms",
        type=_positive_float,
        default=20.0,
        help="the workload writes this often while leading (default 20)",
    )
    status = node_commands.add_parser("status", help="each member's view of each group, as a table")
    status.add_argument("--cluster", required=True)

    from fencekeeper.sim_commands import add_parser as add_sim_parser

    add_sim_parser(commands)

    from fencekeeper.lab.commands import add_parser as add_lab_parser

    add_lab_parser(commands)

    demo = commands.add_parser(
        "demo", help="leader-pause and leader-partition, fencing on and off side by side (under a minute)"
    )
    demo.add_argument("--out", default="demo-runs", help="run directories (default demo-runs)")
    demo.add_argument("--lease-ms", type=int, default=800, help="lease length (default 800)")
    demo.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "storage":
            from fencekeeper import storage_commands

            return storage_commands.run(args)
        if args.command == "cluster":
            from fencekeeper import cluster_commands

            return cluster_commands.run(args)
        if args.command == "node":
            from fencekeeper import node_commands

            return node_commands.run(args)
        if args.command == "sim":
            from fencekeeper import sim_commands

            return sim_commands.run(args)
        if args.command == "lab":
            from fencekeeper.lab import commands as lab_commands

            return lab_commands.run(args)
        if args.command == "demo":
            from fencekeeper.demo import run_demo

            return asyncio.run(run_demo(Path(args.out), args.lease_ms, args.seed))
    except CliError as exc:
        print(f"fencekeeper: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees one of the above


if __name__ == "__main__":
    sys.exit(main())
