"""The aiohttp application: configuration, app factory, middleware and the routes table."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from asyncpg.exceptions import (
    ConnectionDoesNotExistError,
    OperatorInterventionError,
    PostgresConnectionError,
)
from asyncpg.exceptions import InterfaceError as AsyncpgInterfaceError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from storage_service import handlers
from storage_service.config import StorageConfig
from storage_service.db import make_engine
from storage_service.keys import CONFIG, METRICS, STORE
from storage_service.logs import log_event
from storage_service.metrics import StorageMetrics
from storage_service.migrate import upgrade
from storage_service.problems import Problem
from storage_service.store import FencedStore

log = logging.getLogger("storage_service")

_STATUS_KINDS = {404: "not-found", 405: "method-not-allowed", 406: "not-acceptable", 413: "payload-too-large"}


_UNREACHABLE = (
    PoolTimeout,  # no free connection in time
    OperationalError,  # SQLite busy or unopenable; a driver's own connection failures
    InterfaceError,
    OSError,  # refused, reset, timed out
    PostgresConnectionError,  # SQLSTATE class 08
    OperatorInterventionError,  # class 57: shutting down, starting up, crash recovery
    ConnectionDoesNotExistError,
    AsyncpgInterfaceError,  # "connection is closed"
)


def _database_unreachable(exc: BaseException) -> bool:
    """A failure a retry can cure: no connection, a lost one, a database restarting (503).

    SQLAlchemy wraps the driver's exception, so the whole cause chain is looked at. Anything else the
    database refuses is a bug here, not the database's state (500, logged)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _UNREACHABLE) or (isinstance(seen, DBAPIError) and seen.connection_invalidated):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into problem+json and time every request for /metrics."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except Problem as problem:
        response = problem.to_response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _STATUS_KINDS.get(exc.status, "invalid-request")
        problem = Problem(exc.status, kind, exc.reason or exc.text or "")
        if exc.status == 405 and "Allow" in exc.headers:
            problem.headers["Allow"] = exc.headers["Allow"]
        response = problem.to_response(request.path)
    except Exception as exc:
        if _database_unreachable(exc):
            log_event(log, "database_error", f"database error: {exc}", logging.ERROR)
            problem = Problem(503, "database-unavailable", "the database did not answer; retry")
            problem.headers["Retry-After"] = "1"
        else:
            log.exception("unhandled error on %s %s", request.method, request.path)
            problem = Problem(500, "internal-error", "unexpected error; see the server log")
        response = problem.to_response(request.path)
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    request.app[METRICS].latency.labels(request.method, route, str(response.status)).observe(
        time.perf_counter() - started
    )
    return response


def create_app(config: StorageConfig | None = None) -> web.Application:
    config = config or StorageConfig()
    app = web.Application(middlewares=[problem_middleware], client_max_size=config.max_body)
    app[CONFIG] = config
    app[METRICS] = StorageMetrics()
    app.cleanup_ctx.append(_database)
    handlers.add_routes(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    engine = make_engine(config.db_url, pool_size=config.pool_size)
    try:
        if config.migrate:
            await upgrade(engine)
        app[STORE] = FencedStore(engine, fencing=config.fencing)
        if not config.fencing:
            log_event(
                log,
                "fencing_disabled",
                "FENCING IS OFF: every write is accepted whatever its token. "
                "This is the control arm of an experiment; never run it in production.",
                logging.WARNING,
            )
        yield
    finally:
        await engine.dispose()
