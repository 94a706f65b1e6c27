"""`fencekeeper storage serve|migrate|audit`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

from aiohttp import web
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError, OperationalError

from elector import cluster as cluster_file
from elector.cluster import ClusterFileError
from fencekeeper.cli import CliError, open_log
from storage_service import migrate
from storage_service.app import create_app
from storage_service.config import StorageConfig
from storage_service.db import make_engine
from storage_service.logs import log_event
from storage_service.store import FencedStore
from storage_service.tokens import PlainEpochVerifier, QuorumVerifier, TokenVerifier

log = logging.getLogger("fencekeeper.storage")
_DB_ERRORS = (OperationalError, DBAPIError, OSError)


def run(args: argparse.Namespace) -> int:
    return {"serve": serve, "migrate": run_migrate, "audit": audit}[args.storage_command](args)


def _describe(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _verifier(args: argparse.Namespace) -> TokenVerifier:
    if args.token_verify == "none":
        if args.cluster:
            raise CliError("--cluster is only used with --token-verify quorum")
        return PlainEpochVerifier()
    if not args.cluster:
        raise CliError("--token-verify quorum needs --cluster FILE (the cluster.toml of the electors)")
    try:
        return QuorumVerifier(cluster_file.load(args.cluster))
    except ClusterFileError as exc:
        raise CliError(str(exc)) from None


def serve(args: argparse.Namespace) -> int:
    verifier = _verifier(args)
    open_log(args.log_file)
    config = StorageConfig(
        verifier=verifier,
        db_url=args.db,
        fencing=args.fencing == "on",
        migrate=not args.no_migrate,
        max_body=args.max_body,
        pool_size=args.pool_size,
    )
    try:
        # Bind first, so a taken port is reported before anything else happens.
        sock = socket.create_server((args.host, args.port), reuse_port=False)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    app = create_app(config)

    async def announce(_app: web.Application) -> None:
        log_event(
            log,
            "storage_ready",
            f"storage service on http://{args.host}:{args.port} ({config.db_url.split('://')[0]}, "
            f"fencing {'on' if config.fencing else 'OFF'})",
            host=args.host,
            port=args.port,
            fencing=config.fencing,
        )

    app.on_startup.append(announce)
    try:
        web.run_app(app, sock=sock, print=None, access_log=None)
    except _DB_ERRORS as exc:
        raise CliError(f"cannot use the database {args.db}: {_describe(exc)}") from None
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    async def go() -> str | None:
        engine = make_engine(args.db)
        try:
            if args.downgrade:
                await migrate.downgrade(engine, args.revision)
            else:
                await migrate.upgrade(engine, args.revision)
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    try:
        revision = asyncio.run(go())
    except _DB_ERRORS as exc:
        raise CliError(f"cannot migrate {args.db}: {_describe(exc)}") from None
    print(f"database at revision {revision or 'base (empty)'}")
    return 0


def audit(args: argparse.Namespace) -> int:
    async def go() -> list[dict]:
        engine = make_engine(args.db)
        try:
            return await FencedStore(engine).rejections(args.namespace, 0, args.limit)
        finally:
            await engine.dispose()

    try:
        rows = asyncio.run(go())
    except _DB_ERRORS as exc:
        raise CliError(f"cannot read the rejected writes from {args.db}: {_describe(exc)}") from None
    table = Table(title=f"Rejected writes ({len(rows)})")
    for column in ("seq", "at", "namespace", "key", "op", "token", "fence", "reason", "writer", "remote"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["seq"]),
            str(row["at"])[:23],
            row["namespace"],
            row["key"] or "",
            row["op"],
            "" if row["token_epoch"] is None else str(row["token_epoch"]),
            "" if row["current_epoch"] is None else str(row["current_epoch"]),
            row["reason"],
            row["writer"] or "",
            row["remote"] or "",
        )
    # Off a terminal (a pipe, a file) rich would squeeze the table into 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0
