"""The fenced store: every accepted write passes the namespace's fence inside the transaction that writes it.

Safety rule, for every namespace: once a write (or a fence raise) with epoch E has committed, no write with
an epoch below E ever commits afterwards. How the two databases keep it:

* SQLite: every transaction begins IMMEDIATE, so the service has one writer at a time; the fence read and
  the write it guards cannot interleave with anything.
* PostgreSQL: writers hold a *shared* lock on the namespace for their transaction, a fence raise holds
  the *exclusive* one, so a raise waits until every write checked against the old fence has committed,
  and every write that starts later sees the raised fence. The lock is a transaction-scoped advisory lock
  (fair: a waiting raise queues new writers behind it, so a stream of writers cannot starve a new
  leader's fence), plus a row lock on the fence row (`FOR SHARE`/`FOR UPDATE`), whose re-check of the
  newest row version covers a raise that committed after the writer's snapshot was taken.

On PostgreSQL the hot path (a PUT at the current fence epoch, no If-Match) and a fence raise are one
statement each, the same locks inside, run in autocommit on the asyncpg connection (the statement is the
transaction: one round trip); raises have two connections of their own, so that they never queue behind
the writers they are about to fence. Everything else goes through `_guarded`, which works on both databases.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import asyncpg
from sqlalchemy import event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from storage_service.db import fences, history, is_sqlite, make_engine, objects, rejections

T = TypeVar("T")

# classid of our advisory locks ("FENC"), so they cannot collide with an application's own advisory locks.
_ADVISORY_CLASS = 0x46454E43


@dataclass(frozen=True, slots=True)
class PutOp:
    key: str
    value: bytes
    content_type: str = "application/octet-stream"
    if_match: int | Literal["*"] | None = None


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: str
    if_match: int | Literal["*"] | None = None


WriteOp = PutOp | DeleteOp


@dataclass(frozen=True, slots=True)
class WriteResult:
    namespace: str
    key: str
    version: int
    epoch: int
    seq: int
    op: str = "put"


@dataclass(frozen=True, slots=True)
class FenceResult:
    namespace: str
    epoch: int
    previous_epoch: int | None


@dataclass(frozen=True, slots=True)
class StoredObject:
    namespace: str
    key: str
    value: bytes
    content_type: str
    version: int
    epoch: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Writer:
    """Who sent a request: the optional `Fencing-Writer` header and the peer address, for the audit trail."""

    name: str | None = None
    remote: str | None = None


class StoreError(Exception):
    pass


class StaleEpoch(StoreError):
    def __init__(self, namespace: str, token_epoch: int, current_epoch: int) -> None:
        super().__init__(f"epoch {token_epoch} is below the fence of {namespace!r} ({current_epoch})")
        self.namespace = namespace
        self.token_epoch = token_epoch
        self.current_epoch = current_epoch


class PreconditionFailed(StoreError):
    def __init__(self, key: str, expected: int | str, index: int | None = None) -> None:
        super().__init__(f"{key!r} is not at version {expected}")
        self.key = key
        self.expected = expected
        self.index = index


class ObjectNotFound(StoreError):
    def __init__(self, key: str, index: int | None = None) -> None:
        super().__init__(f"no object {key!r}")
        self.key = key
        self.index = index


@functools.lru_cache(maxsize=1024)
def _lock_key(namespace: str) -> int:
    """A signed 32-bit key for the namespace's advisory lock; a collision only makes two namespaces queue."""
    return int.from_bytes(hashlib.blake2b(namespace.encode(), digest_size=4).digest(), "big", signed=True)


# The hot path's statements go to the pooled connection's asyncpg driver connection as they are (positional
# parameters; asyncpg prepares each once per connection) and run in autocommit: the statement is its own
# transaction, so its locks last exactly as long as the write, and a PUT is one round trip to the database.
# Parameters: $1 namespace, $2 key, $3 value, $4 content type, $5 epoch, $6 at, $7 writer; the fenced
# statement adds $8 and $9, the advisory lock's class and key.

# One statement: shared locks, fence check, upsert and history insert. `fl` is the fence row, share-locked
# (its newest version, re-read if a raise committed after this statement's snapshot); `f` is that row only
# when it equals the token's epoch, and every insert depends on it, so a miss writes nothing and returns
# the fence that refused it.
_PG_FAST_PUT = """
    WITH lk AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared($8, $9) AS l),
    fl AS (
        SELECT epoch FROM fences
        WHERE namespace = $1 AND EXISTS (SELECT 1 FROM lk)
        FOR SHARE
    ),
    f AS (SELECT epoch FROM fl WHERE epoch = $5),
    o AS (
        INSERT INTO objects AS cur (namespace, key, value, content_type, version, epoch, updated_at)
        SELECT $1, $2, $3, $4, 1, $5, $6 FROM f
        ON CONFLICT (namespace, key) DO UPDATE SET
            value = excluded.value, content_type = excluded.content_type,
            version = cur.version + 1, epoch = excluded.epoch, updated_at = excluded.updated_at
        RETURNING version
    ),
    h AS (
        INSERT INTO write_history (namespace, key, op, epoch, version, value, writer, at)
        SELECT $1, $2, 'put', $5, o.version, $3, $7, $6 FROM o
        RETURNING seq
    )
    SELECT (SELECT version FROM o) AS version, (SELECT seq FROM h) AS seq, (SELECT epoch FROM fl) AS fence
"""

# A fence raise in one statement: the exclusive lock (it waits until the writers holding the shared one are
# done, and writers that come later queue behind it), the fence row locked FOR UPDATE (its newest version),
# and the new epoch written if it is higher. `previous` is NULL when the namespace has no fence in this
# statement's snapshot: its first raise takes the general path.
_PG_RAISE = """
    WITH lk AS MATERIALIZED (SELECT pg_advisory_xact_lock($3, $4) AS l),
    cur AS (
        SELECT epoch FROM fences
        WHERE namespace = $1 AND EXISTS (SELECT 1 FROM lk)
        FOR UPDATE
    ),
    up AS (
        UPDATE fences SET epoch = $2, raised_at = $5
        WHERE namespace = $1 AND epoch < $2 AND EXISTS (SELECT 1 FROM cur)
        RETURNING epoch
    )
    SELECT (SELECT epoch FROM cur) AS previous
"""

# A refused write, for the audit trail: one statement, like the write it stands for.
_PG_REJECT = """
    INSERT INTO rejected_writes (namespace, key, op, token_epoch, current_epoch, writer, reason, remote, at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    RETURNING seq
"""

# The control arm (`--fencing off`): the same upsert and history insert with no fence in front of them.
_PG_UNFENCED_PUT = """
    WITH o AS (
        INSERT INTO objects AS cur (namespace, key, value, content_type, version, epoch, updated_at)
        VALUES ($1, $2, $3, $4, 1, $5, $6)
        ON CONFLICT (namespace, key) DO UPDATE SET
            value = excluded.value, content_type = excluded.content_type,
            version = cur.version + 1, epoch = excluded.epoch, updated_at = excluded.updated_at
        RETURNING version
    ),
    h AS (
        INSERT INTO write_history (namespace, key, op, epoch, version, value, writer, at)
        SELECT $1, $2, 'put', $5, o.version, $3, $7, $6 FROM o
        RETURNING seq
    )
    SELECT (SELECT version FROM o) AS version, (SELECT seq FROM h) AS seq
"""


class FencedStore:
    """Fenced writes and the reads that go with them, on one engine (PostgreSQL or SQLite).

    With `fencing=False` every write is accepted and still recorded with its epoch: the control arm of
    experiments, never the default.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        fencing: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.fencing = fencing
        self.clock = clock  # wall clock, for the audit trail only; never for a decision
        self._sqlite = is_sqlite(str(engine.url))
        self._insert = sqlite.insert if self._sqlite else postgresql.insert
        self._raise_engine: AsyncEngine | None = None

    def _raise_pool(self) -> AsyncEngine:
        """PostgreSQL connections for fence raises only, disposed of with the main engine.

        Under load the main pool has a queue of writers in front of it as long as the number of clients;
        a raise must not wait behind the very writes it is about to fence.
        """
        if self._raise_engine is None:
            engine = make_engine(self.engine.url.render_as_string(hide_password=False), pool_size=2)
            event.listen(self.engine.sync_engine, "engine_disposed", lambda _: engine.sync_engine.dispose())
            self._raise_engine = engine
        return self._raise_engine

    # -- locking ---------------------------------------------------------------------------------------

    async def _lock_fence(self, conn: AsyncConnection, namespace: str, *, exclusive: bool) -> int | None:
        """Lock the namespace for this transaction and return its fence epoch (None: never raised)."""
        query = select(fences.c.epoch).where(fences.c.namespace == namespace)
        if not self._sqlite:  # SQLite's BEGIN IMMEDIATE already made this transaction the only writer
            lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            await conn.execute(
                text(f"SELECT {lock}(:c, :k)"), {"c": _ADVISORY_CLASS, "k": _lock_key(namespace)}
            )
            query = query.with_for_update(read=not exclusive)
        return (await conn.execute(query)).scalar_one_or_none()

    async def _set_fence(
        self, conn: AsyncConnection, namespace: str, epoch: int, current: int | None
    ) -> None:
        if current is None:
            await conn.execute(
                fences.insert().values(namespace=namespace, epoch=epoch, raised_at=self.clock())
            )
        else:
            await conn.execute(
                update(fences)
                .where(fences.c.namespace == namespace)
                .values(epoch=epoch, raised_at=self.clock())
            )

    async def _guarded(
        self,
        namespace: str,
        epoch: int,
        body: Callable[[AsyncConnection], Awaitable[T]],
    ) -> T:
        """Run `body` in a transaction that holds the namespace's fence at `epoch`, raising it if needed.

        Raises StaleEpoch (nothing written) when fencing is on and `epoch` is below the fence.
        """
        if not self._sqlite:
            # Common case first: the fence already stands at `epoch`; a shared lock lets writers overlap.
            async with self.engine.begin() as conn:
                current = await self._lock_fence(conn, namespace, exclusive=False)
                if current is not None and self.fencing and epoch < current:
                    raise StaleEpoch(namespace, epoch, current)
                if current is not None and (epoch <= current):
                    return await body(conn)
            # The fence must move: start again under the exclusive lock (a shared lock is never upgraded,
            # which could deadlock two would-be raisers).
        async with self.engine.begin() as conn:
            current = await self._lock_fence(conn, namespace, exclusive=True)
            if current is not None and self.fencing and epoch < current:
                raise StaleEpoch(namespace, epoch, current)
            if current is None or epoch > current:
                await self._set_fence(conn, namespace, epoch, current)
            return await body(conn)

    # -- writes ----------------------------------------------------------------------------------------

    async def raise_fence(self, namespace: str, epoch: int) -> FenceResult:
        """Raise the fence to `epoch` (idempotent at the same epoch). StaleEpoch if it is already higher."""
        if not self._sqlite:
            args = (namespace, epoch, _ADVISORY_CLASS, _lock_key(namespace), self.clock())
            previous = (await self._fetch_one(_PG_RAISE, args, self._raise_pool()))[0]
            if previous is not None:
                if epoch < previous and self.fencing:
                    raise StaleEpoch(namespace, epoch, previous)
                return FenceResult(namespace, max(epoch, previous), previous)
        async with self.engine.begin() as conn:
            current = await self._lock_fence(conn, namespace, exclusive=True)
            if current is not None and epoch < current:
                if self.fencing:
                    raise StaleEpoch(namespace, epoch, current)
                return FenceResult(namespace, current, current)
            if current != epoch:
                await self._set_fence(conn, namespace, epoch, current)
        return FenceResult(namespace, epoch, current)

    async def put(self, namespace: str, epoch: int, op: PutOp, writer: Writer) -> WriteResult:
        if not self._sqlite and op.if_match is None:
            result = await self._fast_put(namespace, epoch, op, writer)
            if result is not None:
                return result
        return (await self.write(namespace, epoch, [op], writer))[0]

    async def _fast_put(self, namespace: str, epoch: int, op: PutOp, writer: Writer) -> WriteResult | None:
        """The one-statement PUT on PostgreSQL. StaleEpoch when the fence is above `epoch`; None (nothing
        written) when it is below or was never raised, for the general path, which raises it."""
        args = (namespace, op.key, op.value, op.content_type, epoch, self.clock(), writer.name)
        if self.fencing:
            row = await self._fetch_one(_PG_FAST_PUT, (*args, _ADVISORY_CLASS, _lock_key(namespace)))
            if row[0] is None:
                if row[2] is not None and row[2] > epoch:
                    raise StaleEpoch(namespace, epoch, row[2])
                return None
        else:
            row = await self._fetch_one(_PG_UNFENCED_PUT, args)
        return WriteResult(namespace, op.key, row[0], epoch, row[1])

    async def _fetch_one(self, sql: str, args: tuple[Any, ...], engine: AsyncEngine | None = None) -> Any:
        """Run one statement in autocommit on a pooled connection's asyncpg driver connection: one round
        trip, none of SQLAlchemy's per-statement work. Errors come out as SQLAlchemy's, as on other paths."""
        engine = engine or self.engine
        dbapi_error = engine.dialect.loaded_dbapi.Error
        try:
            pooled = await engine.raw_connection()
        except dbapi_error as exc:  # what Connection() would have wrapped (OSError passes through as there)
            raise DBAPIError.instance(None, None, exc, dbapi_error, dialect=engine.dialect) from exc
        try:
            row = await pooled.driver_connection.fetchrow(sql, *args)
        except BaseException as exc:
            # A failed or cancelled statement leaves the connection in an unknown state: drop it.
            await greenlet_spawn(pooled.invalidate, exc)
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
                raise DBAPIError(sql, None, exc, hide_parameters=True, connection_invalidated=True) from exc
            raise
        await greenlet_spawn(pooled.close)  # back to the pool (IO only when it must close the connection)
        return row

    async def write(
        self, namespace: str, epoch: int, ops: Sequence[WriteOp], writer: Writer
    ) -> list[WriteResult]:
        """Apply `ops` in order under one fence check, all or nothing."""

        async def body(conn: AsyncConnection) -> list[WriteResult]:
            results = []
            for index, op in enumerate(ops):
                at = index if len(ops) > 1 else None
                if isinstance(op, PutOp):
                    version = await self._apply_put(conn, namespace, epoch, op, at)
                    value: bytes | None = op.value
                else:
                    version = await self._apply_delete(conn, namespace, epoch, op, at)
                    value = None
                kind = "put" if isinstance(op, PutOp) else "delete"
                seq = (
                    await conn.execute(
                        history.insert()
                        .values(
                            namespace=namespace,
                            key=op.key,
                            op=kind,
                            epoch=epoch,
                            version=version,
                            value=value,
                            writer=writer.name,
                            at=self.clock(),
                        )
                        .returning(history.c.seq)
                    )
                ).scalar_one()
                results.append(WriteResult(namespace, op.key, version, epoch, seq, kind))
            return results

        return await self._guarded(namespace, epoch, body)

    async def _apply_put(
        self, conn: AsyncConnection, namespace: str, epoch: int, op: PutOp, index: int | None
    ) -> int:
        if op.if_match is None:
            stmt = self._insert(objects).values(
                namespace=namespace,
                key=op.key,
                value=op.value,
                content_type=op.content_type,
                version=1,
                epoch=epoch,
                updated_at=self.clock(),
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[objects.c.namespace, objects.c.key],
                set_={
                    "value": stmt.excluded.value,
                    "content_type": stmt.excluded.content_type,
                    "version": objects.c.version + 1,
                    "epoch": stmt.excluded.epoch,
                    "updated_at": stmt.excluded.updated_at,
                },
            ).returning(objects.c.version)
            return (await conn.execute(stmt)).scalar_one()
        version = await self._update_live(
            conn,
            namespace,
            op.key,
            op.if_match,
            {"value": op.value, "content_type": op.content_type, "epoch": epoch},
        )
        if version is None:
            raise PreconditionFailed(op.key, op.if_match, index)
        return version

    async def _apply_delete(
        self, conn: AsyncConnection, namespace: str, epoch: int, op: DeleteOp, index: int | None
    ) -> int:
        version = await self._update_live(
            conn, namespace, op.key, op.if_match, {"value": None, "epoch": epoch}
        )
        if version is not None:
            return version
        if op.if_match is not None and await self._live_version(conn, namespace, op.key) is not None:
            raise PreconditionFailed(op.key, op.if_match, index)
        raise ObjectNotFound(op.key, index)

    async def _update_live(
        self,
        conn: AsyncConnection,
        namespace: str,
        key: str,
        if_match: int | Literal["*"] | None,
        values: dict[str, Any],
    ) -> int | None:
        """Bump a live object's version with `values`; None if it is absent, deleted or not at `if_match`."""
        stmt = update(objects).where(
            objects.c.namespace == namespace, objects.c.key == key, objects.c.value.is_not(None)
        )
        if isinstance(if_match, int):
            stmt = stmt.where(objects.c.version == if_match)
        stmt = stmt.values(version=objects.c.version + 1, updated_at=self.clock(), **values)
        return (await conn.execute(stmt.returning(objects.c.version))).scalar_one_or_none()

    async def _live_version(self, conn: AsyncConnection, namespace: str, key: str) -> int | None:
        query = select(objects.c.version).where(
            objects.c.namespace == namespace, objects.c.key == key, objects.c.value.is_not(None)
        )
        return (await conn.execute(query)).scalar_one_or_none()

    async def record_rejection(
        self,
        namespace: str,
        *,
        key: str | None,
        op: str,
        reason: str,
        token_epoch: int | None,
        current_epoch: int | None,
        writer: Writer,
    ) -> int:
        if not self._sqlite:
            args = (namespace, key, op, token_epoch, current_epoch, writer.name, reason, writer.remote)
            return (await self._fetch_one(_PG_REJECT, (*args, self.clock())))[0]
        async with self.engine.begin() as conn:
            return (
                await conn.execute(
                    rejections.insert()
                    .values(
                        namespace=namespace,
                        key=key,
                        op=op,
                        token_epoch=token_epoch,
                        current_epoch=current_epoch,
                        writer=writer.name,
                        reason=reason,
                        remote=writer.remote,
                        at=self.clock(),
                    )
                    .returning(rejections.c.seq)
                )
            ).scalar_one()

    # -- reads -----------------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> StoredObject | None:
        query = select(objects).where(
            objects.c.namespace == namespace, objects.c.key == key, objects.c.value.is_not(None)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        return StoredObject(
            namespace, key, row.value, row.content_type, row.version, row.epoch, row.updated_at
        )

    async def fence_epoch(self, namespace: str) -> int | None:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(select(fences.c.epoch).where(fences.c.namespace == namespace))
            ).scalar_one_or_none()

    async def namespace_info(self, namespace: str) -> dict[str, Any]:
        def count(table, *where):
            return select(func.count()).select_from(table).where(table.c.namespace == namespace, *where)

        async with self.engine.connect() as conn:
            fence = (await conn.execute(select(fences).where(fences.c.namespace == namespace))).one_or_none()
            live = (await conn.execute(count(objects, objects.c.value.is_not(None)))).scalar_one()
            accepted = (await conn.execute(count(history))).scalar_one()
            rejected = (await conn.execute(count(rejections))).scalar_one()
        return {
            "namespace": namespace,
            "fence_epoch": fence.epoch if fence else None,
            "fence_raised_at": fence.raised_at if fence else None,
            "objects": live,
            "accepted_writes": accepted,
            "rejected_writes": rejected,
        }

    async def history(self, namespace: str, after: int, limit: int) -> list[dict[str, Any]]:
        query = (
            select(history)
            .where(history.c.namespace == namespace, history.c.seq > after)
            .order_by(history.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def rejections(self, namespace: str | None, after: int, limit: int) -> list[dict[str, Any]]:
        query = select(rejections).where(rejections.c.seq > after).order_by(rejections.c.seq).limit(limit)
        if namespace is not None:
            query = query.where(rejections.c.namespace == namespace)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]
