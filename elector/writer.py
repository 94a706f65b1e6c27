"""Writing to the fenced storage service as a leader: the lease's token on every write, and a 409 obeyed.

    async with leadership(node, "orders") as lease, StorageClient(url, writer=node.id) as storage:
        writer = FencedWriter(node, lease, storage)
        await writer.fence()
        await writer.put("counter", b"42")

A lease is a belief about time, and a process can pause or a clock can jump after it checks the lease;
the storage's fence is what actually keeps an old leader out. So a 409 from the storage is the strongest
news a leader can get: `FencedWriter` hands it to the node (which steps down at once, setting
`lease.lost`) and raises `LeadershipLost`, so that the caller stops acting as leader.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from elector.node.runtime import LeadershipLost, Lease, Node
from storage_service.client import Fenced, StaleTokenError, StorageClient, Value, Written


class LeaderSource(Protocol):
    """What a leader's writes need of the elector: an in-process `Node`, or, for a program beside the
    nodes, their local API (`elector.sidecar.RemoteLeader`)."""

    id: str  # the writer's name in the storage's audit

    async def wait_for_leadership(self, group: str) -> Lease: ...

    async def fenced(self, group: str, current_epoch: int) -> None: ...


def leadership(node: Node, group: str) -> AbstractAsyncContextManager[Lease]:
    """`async with leadership(node, "orders") as lease:` waits until `node` leads, hands over on exit."""
    return node.leadership(group)


class FencedWriter:
    """`StorageClient` calls for one lease: the namespace is the group, the token is the lease's token.

    The writer checks `lease.lost` (no clock) before each request: sending a token the node already knows
    to be dead would only make work for the storage. Whether the lease is still live is not its business:
    the fence decides, and a refusal ends the lease here too.
    """

    def __init__(
        self, node: LeaderSource, lease: Lease, storage: StorageClient, namespace: str | None = None
    ) -> None:
        self.node = node
        self.lease = lease
        self.storage = storage
        self.namespace = namespace or lease.group

    def _check(self) -> None:
        if self.lease.lost.is_set():
            raise LeadershipLost(
                f"{self.lease.holder} no longer leads {self.lease.group} (epoch {self.lease.epoch})"
            )

    async def _fenced_out(self, exc: StaleTokenError) -> LeadershipLost:
        """A newer epoch holds the namespace: step down now rather than at the lease's deadline."""
        await self.node.fenced(self.lease.group, exc.current_epoch)
        return LeadershipLost(
            f"{self.lease.holder} was fenced out of {self.namespace}: epoch {self.lease.epoch} "
            f"is below the fence at {exc.current_epoch}"
        )

    async def fence(self, *, read: str | None = None) -> Fenced:
        """Raise the namespace's fence to this lease's epoch: from now on no older leader can write.

        `read`: a key to read as well once the fence stands (`Fenced.read`), in the same round trip.
        """
        self._check()
        try:
            return await self.storage.raise_fence(self.namespace, self.lease.token, read=read)
        except StaleTokenError as exc:
            raise await self._fenced_out(exc) from exc

    async def get(self, key: str) -> Value | None:
        """Read a value (reads carry no token: they change nothing a newer leader relies on)."""
        return await self.storage.get(self.namespace, key)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_match: int | None = None,
    ) -> Written:
        self._check()
        try:
            return await self.storage.put(
                self.namespace, key, value, self.lease.token, content_type=content_type, if_match=if_match
            )
        except StaleTokenError as exc:
            raise await self._fenced_out(exc) from exc

    async def delete(self, key: str, *, if_match: int | None = None) -> Written:
        self._check()
        try:
            return await self.storage.delete(self.namespace, key, self.lease.token, if_match=if_match)
        except StaleTokenError as exc:
            raise await self._fenced_out(exc) from exc
