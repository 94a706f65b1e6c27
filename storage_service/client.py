"""An aiohttp client for the storage service, with typed results and one exception per problem type.

    async with StorageClient("http://127.0.0.1:8080", writer="n1") as storage:
        await storage.raise_fence("orders", token)
        await storage.put("orders", "counter", b"41", token)

`token` is whatever the service's verifier takes: an epoch (int) with `--token-verify none`, or the
elector's signed token string. A write refused because a newer epoch holds the namespace raises
`StaleTokenError`: the caller is no longer the leader and must stop writing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from storage_service.problems import TYPE_PREFIX


@dataclass(frozen=True, slots=True)
class Written:
    namespace: str
    key: str
    version: int
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Value:
    data: bytes
    content_type: str
    version: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Fenced:
    namespace: str
    epoch: int
    previous_epoch: int | None
    read: Value | None = None  # with raise_fence(read=key): that object behind the fence, if it exists


class StorageError(Exception):
    """An error answer from the service, with its RFC 9457 problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}".strip())
        self.status = status
        self.problem = problem
        self.kind = str(problem.get("type", "")).removeprefix(TYPE_PREFIX)


class StaleTokenError(StorageError):
    """A newer epoch holds the namespace: stop acting as its leader."""

    @property
    def current_epoch(self) -> int:
        return self.problem["current_epoch"]

    @property
    def token_epoch(self) -> int:
        return self.problem["token_epoch"]


class TokenRefusedError(StorageError):
    """The token is missing, malformed, not signed by a quorum, or for another namespace."""


class PreconditionFailedError(StorageError):
    pass


class NotFoundError(StorageError):
    pass


_ERRORS: dict[str, type[StorageError]] = {
    "stale-token": StaleTokenError,
    "missing-token": TokenRefusedError,
    "malformed-token": TokenRefusedError,
    "forged-token": TokenRefusedError,
    "wrong-namespace": TokenRefusedError,
    "precondition-failed": PreconditionFailedError,
    "not-found": NotFoundError,
}


class StorageClient:
    """One keep-alive session to one service; pass `session` to share a pool with other clients."""

    def __init__(
        self,
        base_url: str,
        *,
        writer: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.writer = writer
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session:
            await self._session.close()

    def _headers(self, token: int | str | None = None, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if token is not None:
            headers["Fencing-Token"] = str(token)
        if self.writer:
            headers["Fencing-Writer"] = self.writer
        return headers

    async def _request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        resp = await self._session.request(method, self.base_url + path, **kwargs)
        if resp.status >= 400:
            body = await resp.read()
            try:
                problem = json.loads(body)
            except ValueError:
                problem = {"detail": body.decode(errors="replace")}
            resp.release()
            kind = str(problem.get("type", "")).removeprefix(TYPE_PREFIX)
            raise _ERRORS.get(kind, StorageError)(resp.status, problem)
        return resp

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self._request(method, path, **kwargs)
        async with resp:
            return await resp.json()

    async def raise_fence(self, namespace: str, token: int | str, *, read: str | None = None) -> Fenced:
        """Raise the fence; with `read`, also read that key once the fence stands (one round trip)."""
        params = {} if read is None else {"read": read}
        body = await self._json(
            "POST", f"/v1/namespaces/{namespace}/fence", headers=self._headers(token), params=params
        )
        obj = body.get("object")
        value = None
        if obj is not None:
            data = base64.b64decode(obj["value_base64"])
            value = Value(data, obj["content_type"], obj["version"], obj["epoch"])
        return Fenced(body["namespace"], body["epoch"], body["previous_epoch"], value)

    async def put(
        self,
        namespace: str,
        key: str,
        value: bytes,
        token: int | str,
        *,
        content_type: str = "application/octet-stream",
        if_match: int | None = None,
    ) -> Written:
        headers = self._headers(token, **{"Content-Type": content_type})
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        body = await self._json(
            "PUT", f"/v1/namespaces/{namespace}/objects/{key}", data=value, headers=headers
        )
        return Written(body["namespace"], body["key"], body["version"], body["epoch"], body["seq"])

    async def delete(
        self, namespace: str, key: str, token: int | str, *, if_match: int | None = None
    ) -> Written:
        headers = self._headers(token)
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        body = await self._json("DELETE", f"/v1/namespaces/{namespace}/objects/{key}", headers=headers)
        return Written(body["namespace"], body["key"], body["version"], body["epoch"], body["seq"])

    async def get(self, namespace: str, key: str) -> Value | None:
        """The stored value, or None when there is no such object."""
        try:
            resp = await self._request("GET", f"/v1/namespaces/{namespace}/objects/{key}")
        except NotFoundError:
            return None
        async with resp:
            return Value(
                await resp.read(),
                resp.headers["Content-Type"],
                int(resp.headers["ETag"].strip('"')),
                int(resp.headers["Fencing-Epoch"]),
            )

    async def batch(
        self, namespace: str, operations: list[dict[str, Any]], token: int | str
    ) -> list[Written]:
        body = await self._json(
            "POST",
            f"/v1/namespaces/{namespace}/batch",
            json={"operations": operations},
            headers=self._headers(token),
        )
        return [Written(namespace, r["key"], r["version"], r["epoch"], r["seq"]) for r in body["results"]]

    async def namespace(self, namespace: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/namespaces/{namespace}")

    async def _pages(self, path: str, after: int, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = await self._json("GET", path, params={"after": str(after), "limit": "1000", **params})
            if not page["items"]:
                return items
            items += page["items"]
            after = page["next_after"]

    async def history(self, namespace: str, *, after: int = 0, values: bool = False) -> list[dict[str, Any]]:
        """Every accepted write after `after`, in commit order (all pages)."""
        params = {"values": "true" if values else "false"}
        return await self._pages(f"/v1/namespaces/{namespace}/history", after, params)

    async def rejections(self, namespace: str, *, after: int = 0) -> list[dict[str, Any]]:
        """Every refused write after `after` (all pages)."""
        return await self._pages(f"/v1/namespaces/{namespace}/rejections", after, {})
