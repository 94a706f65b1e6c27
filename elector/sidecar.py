"""A leader's writes from a program beside the nodes: the fencing token from the nodes' local API.

A program that does not run the elector itself (`fencekeeper workload`, or a service in any language)
asks the nodes `GET /v1/groups/{g}/token`: the leader answers 200 with its token, its epoch and what is
left of its lease; every other node answers 409 with a leader hint. `RemoteLeader` turns the leader's
answer into a `Lease`, so that `FencedWriter` and `run_counter` drive it exactly as they drive an
in-process `Node`. The lease counts as lost

* when the remainder the leader reported runs out: the program asks again, and gets the same epoch with
  a fresh remainder from a leader that renewed, or the next leader's token;
* when the storage refuses a write (409 stale-token): a newer epoch holds the namespace, and no token
  below that epoch is taken again.

Every node is asked at once and the highest epoch wins, so a node that is down, cut off or slow to learn
that it was deposed costs one request timeout at most, and the 409s' hints are not needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from elector._log import log_event
from elector.node.runtime import Lease, monotonic_ms

log = logging.getLogger("elector.sidecar")


class RemoteLeader:
    """The leader of a group, as the nodes at `node_urls` report it; a `LeaderSource` for FencedWriter."""

    def __init__(
        self,
        node_urls: Sequence[str],
        session: aiohttp.ClientSession,
        *,
        name: str = "workload",
        poll_s: float = 0.05,
    ) -> None:
        self.id = name
        self.urls = [url.rstrip("/") for url in node_urls]
        self._session = session
        self._poll_s = poll_s
        self._fenced: dict[str, int] = {}  # group -> the epoch the storage said holds its namespace
        self._following: dict[str, tuple[str, int]] = {}  # group -> (node, epoch) last taken, for the log

    async def _ask(self, url: str, group: str) -> tuple[str, dict[str, Any]] | None:
        try:
            async with self._session.get(f"{url}/v1/groups/{group}/token") as resp:
                if resp.status != 200:
                    return None  # 409: not the leader; 404: not in the group; 503: stopping
                return url, await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None  # down or cut off: another node will answer

    async def wait_for_leadership(self, group: str) -> Lease:
        """Return a lease as soon as a node leads `group` at an epoch the storage has not fenced out."""
        while True:
            answers = await asyncio.gather(*(self._ask(url, group) for url in self.urls))
            usable = [
                (url, body)
                for url, body in filter(None, answers)
                if body["epoch"] >= self._fenced.get(group, 0) and body["lease_remaining_ms"] > 0
            ]
            if usable:
                url, body = max(usable, key=lambda answer: answer[1]["epoch"])
                return self._lease(group, url, body)
            await asyncio.sleep(self._poll_s)

    def _lease(self, group: str, url: str, body: dict[str, Any]) -> Lease:
        holder = urlsplit(url).netloc
        remaining_s = body["lease_remaining_ms"] / 1000
        lease = Lease(group, body["epoch"], holder, body["token"], monotonic_ms() + remaining_s * 1000)
        asyncio.get_running_loop().call_later(remaining_s, lease.lost.set)
        if self._following.get(group) != (holder, lease.epoch):
            self._following[group] = (holder, lease.epoch)
            log_event(
                log,
                "leader_found",
                f"{self.id} writes {group} through {holder} at epoch {lease.epoch}",
                group=group,
                leader=holder,
                epoch=lease.epoch,
            )
        return lease

    async def fenced(self, group: str, current_epoch: int) -> None:
        """The storage refused a write: tokens below `current_epoch` are dead, whoever hands them out."""
        self._fenced[group] = max(self._fenced.get(group, 0), current_epoch)
