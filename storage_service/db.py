"""Schema (as SQLAlchemy Core tables) and engine set-up for both supported databases.

The tables here mirror the Alembic migrations; the migrations are the only thing that creates them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    func,
)
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = MetaData()

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (autoincrement); PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

fences = Table(
    "fences",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

objects = Table(
    "objects",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("key", String(512), primary_key=True),
    # A deleted object keeps its row (value NULL) so that versions never repeat and ETags stay unique.
    Column("value", LargeBinary, nullable=True),
    Column("content_type", String(255), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

history = Table(
    "write_history",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("namespace", String(128), nullable=False),
    Column("key", String(512), nullable=False),
    Column("op", String(8), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("value", LargeBinary, nullable=True),
    Column("writer", String(256), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_write_history_namespace_seq", "namespace", "seq"),
)

rejections = Table(
    "rejected_writes",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("namespace", String(128), nullable=False),
    Column("key", String(512), nullable=True),
    Column("op", String(8), nullable=False),
    Column("token_epoch", BigInteger, nullable=True),
    Column("current_epoch", BigInteger, nullable=True),
    Column("writer", String(256), nullable=True),
    Column("reason", String(32), nullable=False),
    Column("remote", String(128), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_rejected_writes_namespace_seq", "namespace", "seq"),
)

DEFAULT_DB_URL = "sqlite+aiosqlite:///./fencekeeper.db"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    """Create the engine with the settings fencing depends on.

    SQLite: every transaction starts with BEGIN IMMEDIATE, so the fence read and the write that depends
    on it are serialised against every other writer (no lock upgrade, no "database is locked" halfway);
    WAL with synchronous=FULL makes an acknowledged write survive a crash of the process and of the host.
    PostgreSQL: `pool_size` connections, no more (see below).
    """
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn) -> None:  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A fixed-size pool: with overflow connections, a burst of returns finds the pool's queue full and
    # closes them, and the next burst opens new ones (a PostgreSQL backend each), over and over under load.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)

    @event.listens_for(engine.sync_engine, "checkout")
    def _check_alive(dbapi_connection, _record, _proxy) -> None:
        # Instead of pool_pre_ping (three round trips per checkout with asyncpg: BEGIN, ping, ROLLBACK):
        # asyncpg notices at once when the server closes a connection (a restart, a crash, a terminated
        # backend), so a closed one is replaced before use, and with it every connection opened before it.
        if dbapi_connection.driver_connection.is_closed():
            raise InvalidatePoolError("the database closed this connection")

    return engine
