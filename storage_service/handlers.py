"""HTTP handlers: parse and validate, call the store, shape the answer. The routes table is at the bottom."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import UTC
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from storage_service.keys import CONFIG, METRICS, STORE
from storage_service.logs import log_event
from storage_service.names import (
    BASE64_RE,
    CONTENT_TYPE_RE,
    ETAG_RE,
    KEY_MAX_LENGTH,
    KEY_RE,
    MAX_BATCH_OPS,
    MAX_INT64,
    MAX_PAGE,
    NAMESPACE_RE,
    WRITER_RE,
)
from storage_service.openapi import openapi_document
from storage_service.problems import Problem
from storage_service.store import (
    DeleteOp,
    ObjectNotFound,
    PreconditionFailed,
    PutOp,
    StaleEpoch,
    StoredObject,
    Writer,
    WriteResult,
)
from storage_service.tokens import PlainEpochVerifier, Token

log = logging.getLogger("storage_service")


# -- request parsing -------------------------------------------------------------------------------------


def _namespace(request: web.Request) -> str:
    ns = request.match_info["ns"]
    if not NAMESPACE_RE.fullmatch(ns):
        raise Problem(
            400,
            "invalid-name",
            "namespace must be 1-128 of A-Z a-z 0-9 . _ - and start with a letter or digit",
        )
    return ns


def _check_key(key: Any, index: int | None = None) -> str:
    if not isinstance(key, str) or len(key) > KEY_MAX_LENGTH or not KEY_RE.fullmatch(key):
        where = f"operation {index}: " if index is not None else ""
        raise Problem(
            400,
            "invalid-name",
            f"{where}key must be 1-{KEY_MAX_LENGTH} of A-Z a-z 0-9 . _ ~ - /, in '/'-separated segments "
            "none of which is empty, '.' or '..'",
        )
    return key


def _writer(request: web.Request) -> Writer:
    name = request.headers.get("Fencing-Writer")
    if name is not None and not WRITER_RE.fullmatch(name):
        raise Problem(400, "invalid-request", "Fencing-Writer must be 1-256 visible ASCII characters")
    return Writer(name, request.remote)


def _if_match(raw: str | None) -> int | str | None:
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "*":
        return "*"
    match = ETAG_RE.fullmatch(raw)
    if match is None:
        raise Problem(400, "invalid-request", 'If-Match must be * or one strong ETag such as "3"')
    return int(match.group(1))


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # Bound the length before int(): a long enough digit string makes int() raise (and costs quadratic time).
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise Problem(400, "invalid-request", f"query parameter {name} must be an integer in [{low}, {high}]")
    return int(raw)


async def _authorize(request: web.Request, namespace: str, op: str, key: str | None) -> tuple[Token, Writer]:
    """The token's epoch for this namespace; a token the verifier refuses (403) is recorded as rejected."""
    writer = _writer(request)
    raw = request.headers.get("Fencing-Token")
    if raw is None or not raw.strip():
        raise Problem(401, "missing-token", "a write needs the header Fencing-Token")
    try:
        token = request.app[CONFIG].verifier.verify(raw, namespace)
    except Problem as problem:
        if problem.status == 403:
            await _reject(request, namespace, op, key, problem.kind.replace("-", "_"), None, None, writer)
        raise
    return token, writer


async def _reject(
    request: web.Request,
    namespace: str,
    op: str,
    key: str | None,
    reason: str,
    token_epoch: int | None,
    current_epoch: int | None,
    writer: Writer,
) -> None:
    """Record a refused write in the database, the log and the metrics (the three places users look)."""
    await request.app[STORE].record_rejection(
        namespace,
        key=key,
        op=op,
        reason=reason,
        token_epoch=token_epoch,
        current_epoch=current_epoch,
        writer=writer,
    )
    request.app[METRICS].rejected.labels(reason).inc()
    log_event(
        log,
        "write_rejected",
        f"rejected {op} of {namespace}/{key or ''}: {reason}",
        logging.WARNING,
        namespace=namespace,
        key=key,
        op=op,
        reason=reason,
        token_epoch=token_epoch,
        current_epoch=current_epoch,
        writer=writer.name,
        remote=writer.remote,
    )


async def _stale(request: web.Request, exc: StaleEpoch, op: str, key: str | None, writer: Writer) -> Problem:
    await _reject(request, exc.namespace, op, key, "stale_epoch", exc.token_epoch, exc.current_epoch, writer)
    return Problem(
        409,
        "stale-token",
        f"epoch {exc.token_epoch} is below the fence of namespace {exc.namespace} ({exc.current_epoch}); "
        "a newer leader holds it",
        namespace=exc.namespace,
        current_epoch=exc.current_epoch,
        token_epoch=exc.token_epoch,
    )


def _store_problem(exc: PreconditionFailed | ObjectNotFound) -> Problem:
    where = {} if exc.index is None else {"operation": exc.index}
    if isinstance(exc, PreconditionFailed):
        return Problem(412, "precondition-failed", str(exc), key=exc.key, **where)
    return Problem(404, "not-found", str(exc), key=exc.key, **where)


def _accepted(request: web.Request, results: list[WriteResult]) -> None:
    metrics = request.app[METRICS]
    for result in results:
        metrics.accepted.labels(result.op).inc()
    metrics.saw_epoch(results[0].namespace, results[0].epoch)


def _write_body(result: WriteResult) -> dict[str, Any]:
    return {
        "namespace": result.namespace,
        "key": result.key,
        "version": result.version,
        "epoch": result.epoch,
        "seq": result.seq,
    }


# -- object routes -----------------------------------------------------------------------------------------


async def put_object(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    key = _check_key(request.match_info["key"])
    if_match = _if_match(request.headers.get("If-Match"))
    content_type = request.headers.get("Content-Type", "application/octet-stream")
    if not CONTENT_TYPE_RE.fullmatch(content_type):
        raise Problem(400, "invalid-request", "Content-Type must be 1-255 printable ASCII characters")
    token, writer = await _authorize(request, namespace, "put", key)
    value = await request.read()
    op = PutOp(key, value, content_type, if_match)
    try:
        result = await request.app[STORE].put(namespace, token.epoch, op, writer)
    except StaleEpoch as exc:
        raise await _stale(request, exc, "put", key, writer) from None
    except (PreconditionFailed, ObjectNotFound) as exc:
        raise _store_problem(exc) from None
    _accepted(request, [result])
    return web.json_response(_write_body(result), headers={"ETag": f'"{result.version}"'})


async def get_object(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    key = _check_key(request.match_info["key"])
    obj = await request.app[STORE].get(namespace, key)
    if obj is None:
        raise Problem(404, "not-found", f"no object {key!r} in namespace {namespace}")
    return web.Response(
        body=obj.value,
        headers={
            "Content-Type": obj.content_type,
            "ETag": f'"{obj.version}"',
            "Fencing-Epoch": str(obj.epoch),
        },
    )


async def delete_object(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    key = _check_key(request.match_info["key"])
    if_match = _if_match(request.headers.get("If-Match"))
    token, writer = await _authorize(request, namespace, "delete", key)
    try:
        [result] = await request.app[STORE].write(namespace, token.epoch, [DeleteOp(key, if_match)], writer)
    except StaleEpoch as exc:
        raise await _stale(request, exc, "delete", key, writer) from None
    except (PreconditionFailed, ObjectNotFound) as exc:
        raise _store_problem(exc) from None
    _accepted(request, [result])
    return web.json_response(_write_body(result) | {"deleted": True})


# -- namespace routes --------------------------------------------------------------------------------------


async def raise_fence(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    read = request.query.get("read")
    key = None if read is None else _check_key(read)
    token, writer = await _authorize(request, namespace, "fence", None)
    try:
        result = await request.app[STORE].raise_fence(namespace, token.epoch)
    except StaleEpoch as exc:
        raise await _stale(request, exc, "fence", None, writer) from None
    request.app[METRICS].saw_epoch(namespace, result.epoch)
    log_event(
        log,
        "fence_raised",
        f"fence of {namespace} at epoch {result.epoch} (was {result.previous_epoch})",
        namespace=namespace,
        epoch=result.epoch,
        previous_epoch=result.previous_epoch,
        writer=writer.name,
        remote=writer.remote,
    )
    body: dict[str, Any] = {
        "namespace": namespace,
        "epoch": result.epoch,
        "previous_epoch": result.previous_epoch,
    }
    if key is not None:
        # Read once the raise has committed: every write below the new epoch that will ever be accepted
        # has been, so this is the state the new leader takes over, one round trip sooner.
        obj = await request.app[STORE].get(namespace, key)
        body["object"] = None if obj is None else _fenced_read(obj)
    return web.json_response(body)


def _fenced_read(obj: StoredObject) -> dict[str, Any]:
    return {
        "key": obj.key,
        "version": obj.version,
        "epoch": obj.epoch,
        "content_type": obj.content_type,
        "value_base64": base64.b64encode(obj.value).decode(),
    }


def _batch_if_match(raw: Any, index: int) -> int | str | None:
    """A batch operation's if_match: None, "*" or a version (JSON does not tell 3 from 3.0: both are 3)."""
    if raw is None or raw == "*":
        return raw
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= MAX_INT64:
        return raw
    raise Problem(
        400,
        "invalid-request",
        f'operation {index}: if_match must be a version (integer 1 to {MAX_INT64}) or "*"',
    )


def _batch_ops(payload: Any) -> list[PutOp | DeleteOp]:
    def bad(detail: str) -> Problem:
        return Problem(400, "invalid-request", detail)

    if not isinstance(payload, dict) or not isinstance(payload.get("operations"), list):
        raise bad('the body must be a JSON object {"operations": [...]}')
    items = payload["operations"]
    if not 1 <= len(items) <= MAX_BATCH_OPS:
        raise bad(f"a batch holds 1 to {MAX_BATCH_OPS} operations")
    ops: list[PutOp | DeleteOp] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or item.get("op") not in ("put", "delete"):
            raise bad(f'operation {index}: needs "op": "put" or "delete"')
        key = _check_key(item.get("key"), index)
        if_match = _batch_if_match(item.get("if_match"), index)
        if item["op"] == "delete":
            ops.append(DeleteOp(key, if_match))
            continue
        value, encoding = item.get("value"), item.get("encoding", "utf-8")
        content_type = item.get("content_type", "application/octet-stream")
        if not isinstance(value, str) or encoding not in ("utf-8", "base64"):
            raise bad(f'operation {index}: a put needs a string "value" and "encoding" utf-8 or base64')
        if encoding == "base64" and not BASE64_RE.fullmatch(value):
            raise bad(f"operation {index}: value is not valid base64 (RFC 4648, padded)")
        if not isinstance(content_type, str) or not CONTENT_TYPE_RE.fullmatch(content_type):
            raise bad(f"operation {index}: content_type must be 1-255 printable ASCII characters")
        try:
            data = base64.b64decode(value, validate=True) if encoding == "base64" else value.encode()
        except (binascii.Error, UnicodeEncodeError):
            raise bad(f"operation {index}: value is not valid {encoding}") from None
        ops.append(PutOp(key, data, content_type, if_match))
    keys = [op.key for op in ops]
    if len(set(keys)) != len(keys):
        raise bad("a batch names each key at most once")
    return ops


async def batch(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    try:
        payload = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise Problem(400, "invalid-request", "the body is not valid JSON") from None
    ops = _batch_ops(payload)
    token, writer = await _authorize(request, namespace, "batch", None)
    try:
        results = await request.app[STORE].write(namespace, token.epoch, ops, writer)
    except StaleEpoch as exc:
        raise await _stale(request, exc, "batch", None, writer) from None
    except (PreconditionFailed, ObjectNotFound) as exc:
        raise _store_problem(exc) from None
    _accepted(request, results)
    return web.json_response(
        {
            "namespace": namespace,
            "epoch": token.epoch,
            "results": [_write_body(r) | {"op": r.op} for r in results],
        }
    )


async def namespace_info(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    info = await request.app[STORE].namespace_info(namespace)
    if info["fence_raised_at"] is not None:
        info["fence_raised_at"] = _iso({"at": info["fence_raised_at"]})["at"]
    return web.json_response(info)


def _iso(row: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as ISO 8601 in UTC (SQLite hands them back without a zone; they were stored in UTC)."""
    at = row["at"]
    row["at"] = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
    return row


async def write_history(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    after = _query_int(request, "after", 0, 0, 2**63 - 1)
    limit = _query_int(request, "limit", 100, 1, MAX_PAGE)
    with_values = request.query.get("values", "false")
    if with_values not in ("true", "false"):
        raise Problem(400, "invalid-request", "query parameter values must be true or false")
    rows = await request.app[STORE].history(namespace, after, limit)
    items = []
    for row in rows:
        value = row.pop("value")
        if with_values == "true":
            row["value_base64"] = None if value is None else base64.b64encode(value).decode()
        row.pop("namespace")
        items.append(_iso(row))
    return web.json_response(
        {"namespace": namespace, "items": items, "next_after": items[-1]["seq"] if items else after}
    )


async def rejected_writes(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    after = _query_int(request, "after", 0, 0, 2**63 - 1)
    limit = _query_int(request, "limit", 100, 1, MAX_PAGE)
    rows = await request.app[STORE].rejections(namespace, after, limit)
    items = [_iso({k: v for k, v in row.items() if k != "namespace"}) for row in rows]
    return web.json_response(
        {"namespace": namespace, "items": items, "next_after": items[-1]["seq"] if items else after}
    )


# -- operations --------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    async with request.app[STORE].engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    epoch_tokens = isinstance(request.app[CONFIG].verifier, PlainEpochVerifier)
    return web.json_response(openapi_document(epoch_tokens=epoch_tokens))


def add_routes(app: web.Application) -> None:
    # The route patterns take any segment (the namespace) and any rest of the path (the key), newlines and
    # braces included, so that a bad name is the handler's 400, not the router's 404.
    namespace = "/v1/namespaces/{ns:[^/]+}"
    objects = namespace + r"/objects/{key:[\s\S]+}"
    app.router.add_routes(
        [
            web.put(objects, put_object),
            web.get(objects, get_object, allow_head=False),
            web.delete(objects, delete_object),
            web.post(namespace + "/fence", raise_fence),
            web.post(namespace + "/batch", batch),
            web.get(namespace, namespace_info, allow_head=False),
            web.get(namespace + "/history", write_history, allow_head=False),
            web.get(namespace + "/rejections", rejected_writes, allow_head=False),
            web.get("/healthz", healthz, allow_head=False),
            web.get("/readyz", readyz, allow_head=False),
            web.get("/metrics", metrics, allow_head=False),
            web.get("/openapi.json", openapi, allow_head=False),
        ]
    )
