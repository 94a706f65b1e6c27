"""The `fencekeeper` command line. Every bad input ends in one plain line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from storage_service.db import DEFAULT_DB_URL


class CliError(Exception):
    """A user-facing failure: printed as one line, no traceback."""


def open_log(log_file: str | None) -> None:
    """JSON log lines to `log_file` (or stderr); a file that cannot be opened stops start-up in one line."""
    from storage_service.logs import configure_logging

    try:
        configure_logging(log_file)
    except OSError as exc:
        raise CliError(f"cannot write --log-file {log_file}: {exc.strerror}") from None


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


ENV_PREFIX = "FENCEKEEPER_"
# Names that say more than the option's: what operators look for in a container's environment.
_ENV_NAMES = {"db": "FENCEKEEPER_DB_URL", "id": "FENCEKEEPER_NODE_ID"}
_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}


def env_name(action: argparse.Action) -> str:
    """The environment variable that sets `action`: FENCEKEEPER_<DEST>, or the documented exception."""
    return _ENV_NAMES.get(action.dest, ENV_PREFIX + action.dest.upper())


def env_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of `parser` that an environment variable can set (after `configure_by_env`)."""
    return [a for a in parser._actions if getattr(a, "env_var", None)]


class _Parser(argparse.ArgumentParser):
    env: Mapping[str, str] | None = None  # set by configure_by_env: options read FENCEKEEPER_* from it

    def error(self, message: str) -> None:  # one plain line, not the usage block
        self.exit(2, f"fencekeeper: {message} (see --help)\n")

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Only the chosen subcommand reads the environment, so a variable meant for another command
        (FENCEKEEPER_PORT for `storage serve` while running `cluster init`) is never judged here; and
        --help works even when a variable is wrong."""
        wants_help = not {"-h", "--help"}.isdisjoint(args or ())
        appended = self._apply_env() if self.env is not None and not wants_help else {}
        namespace, extras = super().parse_known_args(args, namespace)
        for dest, values in appended.items():
            if getattr(namespace, dest) is None:  # command line > environment for repeatable options too
                setattr(namespace, dest, values)
        return namespace, extras

    def _apply_env(self) -> dict[str, list[object]]:
        """Make each set variable the option's default (so the command line still wins); values of
        repeatable options are returned instead, since argparse would append to a default list."""
        assert self.env is not None
        appended: dict[str, list[object]] = {}
        for action in env_actions(self):
            raw = self.env.get(action.env_var, "")
            if not raw:  # unset or empty (`FOO=` in a compose file): the default stands
                continue
            action.required = False
            if isinstance(action, argparse._StoreTrueAction):
                if raw.lower() not in _TRUE | _FALSE:
                    self._env_error(action, f"not one of 1/true/yes or 0/false/no: {raw!r}")
                action.default = raw.lower() in _TRUE
            elif isinstance(action, argparse._AppendAction):
                appended[action.dest] = [self._env_value(action, v.strip()) for v in raw.split(",")]
            else:
                action.default = self._env_value(action, raw)
        return appended

    def _env_value(self, action: argparse.Action, raw: str) -> object:
        try:
            value = action.type(raw) if callable(action.type) else raw
        except argparse.ArgumentTypeError as exc:
            self._env_error(action, str(exc))
        except (TypeError, ValueError):
            self._env_error(action, f"invalid {getattr(action.type, '__name__', 'value')} value: {raw!r}")
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            self._env_error(action, f"invalid choice: {raw!r} (choose from {choices})")
        return value

    def _env_error(self, action: argparse.Action, message: str) -> NoReturn:
        self.exit(2, f"fencekeeper: {action.env_var}: {message}\n")


def configure_by_env(
    parser: argparse.ArgumentParser, env: Mapping[str, str], only: Collection[str] | None = None
) -> None:
    """Let every option of `parser` (or those whose dest is in `only`) be set by its FENCEKEEPER_*
    variable, and say so in --help. Call it after the last add_argument: it walks the actions."""
    assert isinstance(parser, _Parser)
    parser.env = env
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        if only is not None and action.dest not in only:
            continue
        action.env_var = env_name(action)  # type: ignore[attr-defined]
        many = " (comma-separated)" if isinstance(action, argparse._AppendAction) else ""
        action.help = f"{action.help or ''} [env {action.env_var}{many}]".strip()


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; `storage serve`, `node run`, `workload` and the `--db` of `storage migrate`
    and `audit` also read FENCEKEEPER_* variables from `env` (default: os.environ)."""
    env = os.environ if env is None else env
    parser = _Parser(prog="fencekeeper", description="Split-brain-proof leadership with fenced storage.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    storage = commands.add_parser("storage", help="the fenced storage service")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)

    serve = storage_commands.add_parser("serve", help="serve the REST API")
    serve.add_argument(
        "--db", type=_db_url, default=DEFAULT_DB_URL, help="database URL (default: %(default)s)"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)"
    )
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
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
    migrate.add_argument("--db", type=_db_url, default=DEFAULT_DB_URL, help="database URL, as for serve")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--downgrade", action="store_true", help="migrate down to --revision instead")

    audit = storage_commands.add_parser("audit", help="print the rejected writes as a table")
    audit.add_argument("--db", type=_db_url, default=DEFAULT_DB_URL, help="database URL, as for serve")
    audit.add_argument("--namespace", help="only this namespace")
    audit.add_argument("--limit", type=int, default=1000)

    cluster = commands.add_parser("cluster", help="cluster files")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    init = cluster_commands.add_parser("init", help="write cluster.toml and one private key per member")
    init.add_argument("--nodes", type=int, default=3, help="members (default 3)")
    init.add_argument("--out", required=True, help="directory to write into")
    init.add_argument(
        "--host",
        default="127.0.0.1",
        help="members' host; {id} becomes each member's id, e.g. '{id}' where each runs as a service named "
        "after it (default 127.0.0.1)",
    )
    init.add_argument("--base-port", type=_port, default=7100, help="port of n1; n2 gets the next, ...")
    init.add_argument("--lease-ms", type=int, default=2000, help="lease length (default 2000)")
    init.add_argument(
        "--if-missing",
        action="store_true",
        help="keep an existing DIR/cluster.toml and its keys (a one-shot init run at every start)",
    )

    node = commands.add_parser("node", help="elector nodes")
    node_commands = node.add_subparsers(dest="node_command", required=True)
    run = node_commands.add_parser("run", help="run a voter and a candidate per group")
    run.add_argument("--cluster", required=True, help="cluster.toml from `fencekeeper cluster init`")
    run.add_argument("--id", required=True, help="this member's id (n1, n2, ...)")
    run.add_argument(
        "--listen",
        metavar="HOST",
        help="the address to listen on (default: the host of this member's address; 0.0.0.0 in a container)",
    )
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
    run.add_argument(
        "--clock-rate",
        type=_positive_float,
        default=1.0,
        help="lab and tests only: this node's clock runs this many times real speed (default 1)",
    )
    status = node_commands.add_parser("status", help="each member's view of each group, as a table")
    status.add_argument("--cluster", required=True)

    workload = commands.add_parser(
        "workload", help="the counter workload as a separate program: tokens from the nodes' local API"
    )
    workload.add_argument(
        "--node",
        action="append",
        dest="nodes",
        required=True,
        metavar="URL",
        help="a node's local API, e.g. http://n1:7100; repeat for each node (the leader is asked)",
    )
    workload.add_argument("--storage", metavar="URL", required=True, help="the storage service")
    workload.add_argument(
        "--group", action="append", dest="groups", help="an election group (= storage namespace); repeatable"
    )
    workload.add_argument("--workload-key", default="counter", help="the counter's key (default counter)")
    workload.add_argument(
        "--write-interval-ms", type=_positive_float, default=20.0, help="one write this often (default 20)"
    )
    workload.add_argument(
        "--writer", default="workload", help="Fencing-Writer of its writes (default workload)"
    )
    workload.add_argument("--log-file", help="write JSON log lines here instead of stderr")

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

    for configurable in (serve, run, workload):
        configure_by_env(configurable, env)
    for configurable in (migrate, audit):
        configure_by_env(configurable, env, only={"db"})
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
        if args.command == "workload":
            from fencekeeper import workload_commands

            return workload_commands.run(args)
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
