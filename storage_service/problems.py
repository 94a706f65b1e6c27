"""RFC 9457 problem details: every error the API returns is one of these, with a stable `type`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:fencekeeper:problem:"

TITLES = {
    "stale-token": "Stale fencing token",
    "missing-token": "Missing fencing token",
    "malformed-token": "Malformed fencing token",
    "forged-token": "Fencing token not signed by a quorum",
    "wrong-namespace": "Fencing token is for another namespace",
    "precondition-failed": "Precondition failed",
    "not-found": "Not found",
    "invalid-name": "Invalid namespace or key",
    "invalid-request": "Invalid request",
    "payload-too-large": "Payload too large",
    "method-not-allowed": "Method not allowed",
    "not-acceptable": "Not acceptable",
    "database-unavailable": "Database unavailable",
    "internal-error": "Internal server error",
}


class Problem(Exception):
    """Raise from a handler to answer with a problem+json document."""

    def __init__(self, status: int, kind: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def to_response(self, instance: str | None = None) -> web.Response:
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.kind,
            "title": TITLES.get(self.kind, self.kind),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return web.Response(
            status=self.status,
            body=json.dumps(body, default=str).encode(),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )
