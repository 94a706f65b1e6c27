"""The OpenAPI 3.1 description of the API (served at /openapi.json).

Plain data, built from the constants the handlers enforce (`storage_service.names`), so a pattern or a
limit cannot drift between the code and the document. tests/test_openapi.py checks that it is valid and
covers every route; tests/test_schemathesis.py checks that the running service never contradicts it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from elector.token import MAX_TOKEN_BYTES
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
from storage_service.problems import PROBLEM_CONTENT_TYPE, TITLES, TYPE_PREFIX

Schema = dict[str, Any]


# -- building blocks ---------------------------------------------------------------------------------------


def _pattern(regex: re.Pattern[str]) -> str:
    """The handlers `fullmatch`; JSON Schema searches, so anchor the pattern."""
    return f"^(?:{regex.pattern})$"


def _ref(section: str, name: str) -> Schema:
    return {"$ref": f"#/components/{section}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), closed: bool = True) -> Schema:
    """An object with these properties, all required but `optional`; closed: no other property."""
    schema: Schema = {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def _json(schema: Schema, media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


# -- schemas -----------------------------------------------------------------------------------------------

_WRITE_FIELDS: dict[str, Schema] = {
    "namespace": _schema("Namespace"),
    "key": _schema("Key"),
    "version": _schema("Version"),
    "epoch": _schema("Epoch"),
    "seq": _schema("Seq"),
}


def _page(item: str) -> Schema:
    return _object(
        {
            "namespace": _schema("Namespace"),
            "items": {"type": "array", "items": _schema(item), "maxItems": MAX_PAGE},
            "next_after": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_INT64,
                "description": "The `after` of the next page: the last item's `seq` (or `after` if none).",
            },
        }
    )


SCHEMAS: dict[str, Schema] = {
    "Namespace": {
        "type": "string",
        "pattern": _pattern(NAMESPACE_RE),
        "description": "1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit.",
    },
    "Key": {
        "type": "string",
        "pattern": _pattern(KEY_RE),
        "maxLength": KEY_MAX_LENGTH,
        "description": "1-512 of A-Z a-z 0-9 . _ ~ - /: '/'-separated segments, none empty, '.' or '..'.",
    },
    "Epoch": {"type": "integer", "minimum": 0, "maximum": MAX_INT64, "description": "A leadership epoch."},
    "Version": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_INT64,
        "description": "The object's version; it never repeats, not even after a delete.",
    },
    "Seq": {"type": "integer", "minimum": 1, "maximum": MAX_INT64, "description": "Position in a log."},
    "Timestamp": {"type": "string", "format": "date-time", "description": "ISO 8601, UTC."},
    "ContentType": {"type": "string", "pattern": _pattern(CONTENT_TYPE_RE)},
    "Writer": {"type": "string", "pattern": _pattern(WRITER_RE)},
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; some types add members of their own.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string", "description": "The request path."},
        },
    },
    "WriteResult": _object(_WRITE_FIELDS),
    "DeleteResult": _object(_WRITE_FIELDS | {"deleted": {"const": True}}),
    "FenceResult": _object(
        {
            "namespace": _schema("Namespace"),
            "epoch": _schema("Epoch"),
            "previous_epoch": _nullable(_schema("Epoch")),
            "object": _nullable(_schema("FencedRead"))
            | {"description": "Only with `read`: that object as it stands behind the raised fence."},
        },
        optional=("object",),
    ),
    "FencedRead": _object(
        {
            "key": _schema("Key"),
            "version": _schema("Version"),
            "epoch": _schema("Epoch"),
            "content_type": _schema("ContentType"),
            "value_base64": {"type": "string", "contentEncoding": "base64"},
        }
    ),
    "BatchPut": _object(
        {
            "op": {"const": "put"},
            "key": _schema("Key"),
            "value": {"type": "string", "description": "The bytes, as text (utf-8) or base64."},
            "encoding": {"enum": ["utf-8", "base64"], "default": "utf-8"},
            "content_type": _schema("ContentType") | {"default": "application/octet-stream"},
            "if_match": _schema("IfMatchVersion"),
        },
        optional=("encoding", "content_type", "if_match"),
        closed=False,
    )
    | {
        "if": {"required": ["encoding"], "properties": {"encoding": {"const": "base64"}}},
        "then": {"properties": {"value": {"pattern": _pattern(BASE64_RE), "contentEncoding": "base64"}}},
    },
    "BatchDelete": _object(
        {"op": {"const": "delete"}, "key": _schema("Key"), "if_match": _schema("IfMatchVersion")},
        optional=("if_match",),
        closed=False,
    ),
    "IfMatchVersion": {
        "description": 'Apply only if the object is at this version; "*": only if it exists.',
        "oneOf": [_schema("Version"), {"const": "*"}],
    },
    "BatchRequest": _object(
        {
            "operations": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_OPS,
                "description": "Applied in order, all or nothing; each key at most once.",
                "items": {
                    "oneOf": [_schema("BatchPut"), _schema("BatchDelete")],
                    "discriminator": {
                        "propertyName": "op",
                        "mapping": {
                            "put": "#/components/schemas/BatchPut",
                            "delete": "#/components/schemas/BatchDelete",
                        },
                    },
                },
            }
        },
        closed=False,
    ),
    "BatchResult": _object(
        {
            "namespace": _schema("Namespace"),
            "epoch": _schema("Epoch"),
            "results": {
                "type": "array",
                "minItems": 1,
                "items": _object(_WRITE_FIELDS | {"op": {"enum": ["put", "delete"]}}),
            },
        }
    ),
    "NamespaceInfo": _object(
        {
            "namespace": _schema("Namespace"),
            "fence_epoch": _nullable(_schema("Epoch")),
            "fence_raised_at": _nullable(_schema("Timestamp")),
            "objects": {"type": "integer", "minimum": 0, "description": "Live (not deleted) objects."},
            "accepted_writes": {"type": "integer", "minimum": 0},
            "rejected_writes": {"type": "integer", "minimum": 0},
        }
    ),
    "HistoryItem": _object(
        {
            "seq": _schema("Seq"),
            "key": _schema("Key"),
            "op": {"enum": ["put", "delete"]},
            "epoch": _schema("Epoch"),
            "version": _schema("Version"),
            "writer": _nullable(_schema("Writer")),
            "at": _schema("Timestamp"),
            "value_base64": _nullable({"type": "string", "contentEncoding": "base64"})
            | {"description": "Only with values=true; null for a delete."},
        },
        optional=("value_base64",),
    ),
    "HistoryPage": _page("HistoryItem"),
    "Rejection": _object(
        {
            "seq": _schema("Seq"),
            "key": _nullable(_schema("Key")),
            "op": {"enum": ["put", "delete", "fence", "batch"]},
            "token_epoch": _nullable(_schema("Epoch")),
            "current_epoch": _nullable(_schema("Epoch")),
            "writer": _nullable(_schema("Writer")),
            "reason": {
                "type": "string",
                "description": "stale_epoch, or the refused token's problem type with '_' for '-'.",
            },
            "remote": _nullable({"type": "string"}),
            "at": _schema("Timestamp"),
        }
    ),
    "RejectionsPage": _page("Rejection"),
    "Health": _object({"status": {"const": "ok"}}),
    "Ready": _object({"status": {"const": "ready"}}),
}


# -- responses ---------------------------------------------------------------------------------------------


def _problem(
    description: str,
    status: int,
    kinds: tuple[str, ...],
    *,
    members: dict[str, Schema] | None = None,
    required: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A problem+json response of this status, whose `type` is one of `kinds` (each with its title)."""
    variants = [{"type": {"const": TYPE_PREFIX + kind}, "title": {"const": TITLES[kind]}} for kind in kinds]
    narrowed: Schema = {"properties": {"status": {"const": status}, **(members or {})}}
    if len(variants) == 1:
        narrowed["properties"] |= variants[0]
    else:
        narrowed["oneOf"] = [{"properties": variant} for variant in variants]
    if required:
        narrowed["required"] = list(required)
    response: dict[str, Any] = {
        "description": description,
        "content": _json({"allOf": [_schema("Problem"), narrowed]}, PROBLEM_CONTENT_TYPE),
    }
    if headers:
        response["headers"] = {name: _ref("headers", name) for name in headers}
    return response


_STORE_MEMBERS = {
    "key": _schema("Key"),
    "operation": {"type": "integer", "minimum": 0, "description": "The batch operation at fault."},
}

RESPONSES: dict[str, Any] = {
    "BadRequest": _problem(
        "A malformed name, header, query parameter, body or token.",
        400,
        ("invalid-name", "invalid-request", "malformed-token"),
    ),
    "MissingToken": _problem("A write without a Fencing-Token header.", 401, ("missing-token",)),
    "TokenRefused": _problem(
        "The token verifier does not trust the token (recorded as a rejected write).",
        403,
        ("forged-token", "wrong-namespace"),
    ),
    "NotFound": _problem("No such live object.", 404, ("not-found",), members=_STORE_MEMBERS),
    "MethodNotAllowed": _problem(
        "Any path, for a method it does not serve.",
        405,
        ("method-not-allowed",),
        headers=("Allow",),
    ),
    "NotAcceptable": _problem("Reserved: no route answers 406 today.", 406, ("not-acceptable",)),
    "StaleToken": _problem(
        "The token's epoch is below the namespace's fence: a newer leader holds it. Nothing was written; "
        "the attempt is recorded as a rejected write.",
        409,
        ("stale-token",),
        members={
            "namespace": _schema("Namespace"),
            "current_epoch": _schema("Epoch"),
            "token_epoch": _schema("Epoch"),
        },
        required=("namespace", "current_epoch", "token_epoch"),
    ),
    "PreconditionFailed": _problem(
        "If-Match (or a batch operation's if_match) does not hold. Nothing was written.",
        412,
        ("precondition-failed",),
        members=_STORE_MEMBERS,
        required=("key",),
    ),
    "PayloadTooLarge": _problem("The body is over the server's --max-body.", 413, ("payload-too-large",)),
    "InternalError": _problem("A bug; the server log has the traceback.", 500, ("internal-error",)),
    "DatabaseUnavailable": _problem(
        "The database did not answer; retry.",
        503,
        ("database-unavailable",),
        headers=("Retry-After",),
    ),
}


# -- parameters and headers --------------------------------------------------------------------------------

PARAMETERS: dict[str, Any] = {
    "Namespace": {"name": "ns", "in": "path", "required": True, "schema": _schema("Namespace")},
    "Key": {
        "name": "key",
        "in": "path",
        "required": True,
        "description": "May contain '/' (sent as is or as %2F).",
        "schema": _schema("Key"),
    },
    "FencingToken": {
        "name": "Fencing-Token",
        "in": "header",
        "required": True,
        "description": "The writer's epoch (--token-verify none) or its elector token (--token-verify "
        "quorum). Missing: 401; malformed: 400.",
        "schema": _schema("Epoch"),
    },
    "FencingWriter": {
        "name": "Fencing-Writer",
        "in": "header",
        "description": "Who writes, for the audit trail (history and rejected writes).",
        "schema": _schema("Writer"),
    },
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "description": 'Apply only if the object is at this ETag, such as "3"; *: only if it exists.',
        "schema": {"type": "string", "anyOf": [{"const": "*"}, {"pattern": _pattern(ETAG_RE)}]},
    },
    "After": {
        "name": "after",
        "in": "query",
        "description": "Only items with a larger seq.",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT64, "default": 0},
    },
    "Limit": {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
    },
    "Read": {
        "name": "read",
        "in": "query",
        "description": "A key to read once the fence is raised: the new leader's first read, without a "
        "second round trip (null in `object` when there is no such object).",
        "schema": _schema("Key"),
    },
    "Values": {
        "name": "values",
        "in": "query",
        "description": "true: add each write's bytes as value_base64.",
        "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
    },
}

HEADERS: dict[str, Any] = {
    "ETag": {
        "required": True,
        "description": "The object's version as a strong ETag, for If-Match.",
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    },
    "Fencing-Epoch": {
        "required": True,
        "description": "The epoch of the write that stored this version.",
        "schema": _schema("Epoch"),
    },
    "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 0}},
    "Allow": {"required": True, "description": "The methods the path serves.", "schema": {"type": "string"}},
}


# What a client can do next with the object it just wrote (and what schemathesis chains, statefully).
_SAME_OBJECT = {"ns": "$request.path.ns", "key": "$request.path.key"}
LINKS: dict[str, Any] = {
    "GetObject": {"operationId": "getObject", "parameters": _SAME_OBJECT, "description": "Read it back."},
    "DeleteObject": {
        "operationId": "deleteObject",
        "parameters": _SAME_OBJECT
        | {"Fencing-Token": "$request.header.Fencing-Token", "If-Match": "$response.header.ETag"},
        "description": "Delete this version of it, with the same token.",
    },
}


# -- operations --------------------------------------------------------------------------------------------

_READ_ERRORS = ("BadRequest",)
_WRITE_ERRORS = ("BadRequest", "MissingToken", "TokenRefused", "StaleToken")
_STATUS_OF = {
    "BadRequest": "400",
    "MissingToken": "401",
    "TokenRefused": "403",
    "NotFound": "404",
    "StaleToken": "409",
    "PreconditionFailed": "412",
    "PayloadTooLarge": "413",
    "InternalError": "500",
    "DatabaseUnavailable": "503",
}


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    errors: tuple[str, ...] = (),
    *,
    database: bool = True,
    parameters: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation: its 200 answer `ok`, then the shared error responses it can give (always 500)."""
    errors += ("InternalError",) + (("DatabaseUnavailable",) if database else ())
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {"200": ok} | {_STATUS_OF[name]: _ref("responses", name) for name in errors},
    }
    if parameters:
        operation["parameters"] = [_ref("parameters", name) for name in parameters]
    if body:
        operation["requestBody"] = body
    return operation


def _ok(
    description: str, schema: str, headers: tuple[str, ...] = (), links: tuple[str, ...] = ()
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_schema(schema))}
    if headers:
        response["headers"] = {name: _ref("headers", name) for name in headers}
    if links:
        response["links"] = {name: _ref("links", name) for name in links}
    return response


_WRITE_PARAMETERS = ("FencingToken", "FencingWriter")

PATHS: dict[str, Any] = {
    "/v1/namespaces/{ns}/objects/{key}": {
        "parameters": [_ref("parameters", "Namespace"), _ref("parameters", "Key")],
        "put": _operation(
            "putObject",
            "Store an object's bytes, fenced by the token's epoch.",
            _ok(
                "Stored; a higher epoch raised the fence first.",
                "WriteResult",
                ("ETag",),
                ("GetObject", "DeleteObject"),
            ),
            (*_WRITE_ERRORS, "PreconditionFailed", "PayloadTooLarge"),
            parameters=(*_WRITE_PARAMETERS, "IfMatch"),
            body={
                "description": "Any bytes; the Content-Type (default application/octet-stream, 1-255 "
                "printable ASCII characters, else 400) is stored and served back by GET.",
                "required": False,
                "content": {"*/*": {"schema": {}}},
            },
        ),
        "get": _operation(
            "getObject",
            "Read an object: its bytes under its stored Content-Type.",
            {
                "description": "The object.",
                "headers": {name: _ref("headers", name) for name in ("ETag", "Fencing-Epoch")},
                "content": {"*/*": {"schema": {}}},
            },
            (*_READ_ERRORS, "NotFound"),
        ),
        "delete": _operation(
            "deleteObject",
            "Delete an object, fenced by the token's epoch; its version still counts up.",
            _ok("Deleted.", "DeleteResult"),
            (*_WRITE_ERRORS, "NotFound", "PreconditionFailed"),
            parameters=(*_WRITE_PARAMETERS, "IfMatch"),
        ),
    },
    "/v1/namespaces/{ns}/fence": {
        "parameters": [_ref("parameters", "Namespace")],
        "post": _operation(
            "raiseFence",
            "Raise the namespace's fence to the token's epoch (idempotent at the same epoch).",
            _ok("The fence stands at `epoch`.", "FenceResult"),
            _WRITE_ERRORS,
            parameters=(*_WRITE_PARAMETERS, "Read"),
        ),
    },
    "/v1/namespaces/{ns}/batch": {
        "parameters": [_ref("parameters", "Namespace")],
        "post": _operation(
            "batch",
            "Apply puts and deletes all or nothing under one fence check.",
            _ok("All applied, in order.", "BatchResult"),
            (*_WRITE_ERRORS, "NotFound", "PreconditionFailed", "PayloadTooLarge"),
            parameters=_WRITE_PARAMETERS,
            body={"required": True, "content": _json(_schema("BatchRequest"))},
        ),
    },
    "/v1/namespaces/{ns}": {
        "parameters": [_ref("parameters", "Namespace")],
        "get": _operation(
            "namespaceInfo",
            "The namespace's fence and counts.",
            _ok("The namespace (zero counts and a null fence if never written).", "NamespaceInfo"),
            _READ_ERRORS,
        ),
    },
    "/v1/namespaces/{ns}/history": {
        "parameters": [_ref("parameters", "Namespace")],
        "get": _operation(
            "writeHistory",
            "Accepted writes, oldest first.",
            _ok("One page.", "HistoryPage"),
            _READ_ERRORS,
            parameters=("After", "Limit", "Values"),
        ),
    },
    "/v1/namespaces/{ns}/rejections": {
        "parameters": [_ref("parameters", "Namespace")],
        "get": _operation(
            "rejectedWrites",
            "Refused writes (stale or untrusted tokens), oldest first.",
            _ok("One page.", "RejectionsPage"),
            _READ_ERRORS,
            parameters=("After", "Limit"),
        ),
    },
    "/healthz": {
        "get": _operation(
            "healthz", "Liveness: the process answers.", _ok("Alive.", "Health"), database=False
        )
    },
    "/readyz": {"get": _operation("readyz", "Readiness: the database answers.", _ok("Ready.", "Ready"))},
    "/metrics": {
        "get": _operation(
            "metrics",
            "Prometheus metrics.",
            {"description": "Text exposition format.", "content": _json({"type": "string"}, "text/plain")},
            database=False,
        )
    },
    "/openapi.json": {
        "get": _operation(
            "openapi",
            "This document.",
            {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})},
            database=False,
        )
    },
}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "fencekeeper storage",
        "version": "0.1.0",
        "description": "A storage service that refuses stale writes: every write carries a fencing token "
        "(a leadership epoch) and is accepted only if the epoch is not below the namespace's fence. "
        "Every error is RFC 9457 problem+json with a stable `type`.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "parameters": PARAMETERS,
        "headers": HEADERS,
        "links": LINKS,
    },
}


# What Fencing-Token carries when the server trusts only quorum-signed tokens (--token-verify quorum).
ELECTOR_TOKEN: Schema = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_-]+$",
    "maxLength": MAX_TOKEN_BYTES,
    "description": "An elector token: unpadded base64url of a JSON object with the cluster, group (the "
    "namespace), epoch, holder and a quorum of voter signatures. Untrusted: 403.",
}


def openapi_document(*, epoch_tokens: bool = True) -> dict[str, Any]:
    """A fresh copy of the document; `epoch_tokens=False`: Fencing-Token is an elector token, not an epoch."""
    document = copy.deepcopy(DOCUMENT)
    if not epoch_tokens:
        document["components"]["parameters"]["FencingToken"]["schema"] = copy.deepcopy(ELECTOR_TOKEN)
    return document
