"""The asyncio shell around the core: one node = one voter + one candidate per group.

Every input (a peer's messages, a timer, a release, a 409 from the storage) is handed to the core on the
event loop, one at a time; its `Output` is carried out in the order the core requires: promises are
fsynced first, then messages leave, then events update leases, metrics and logs. Messages to one peer
that come out of one step travel in one HTTP request (all groups together); the answers come back in
the response body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from elector._log import log_event
from elector.cluster import Cluster
from elector.core import (
    BecameLeader,
    Campaign,
    CampaignFailed,
    CampaignStarted,
    Candidate,
    CandidateTiming,
    EpochMoved,
    LeaseExtended,
    Message,
    Output,
    Release,
    Renew,
    Role,
    SteppedDown,
    Voter,
)
from elector.node import wire
from elector.node.metrics import NodeMetrics
from elector.node.voter_store import VoterStore
from elector.token import FencingToken, sign_grant

log = logging.getLogger("elector")
VOTER_MESSAGES = (Campaign, Renew, Release)


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


def drifting_clock(rate: float) -> Callable[[], float]:
    """A clock in ms that runs `rate` times real speed from now: the lab's clock drift (`--clock-rate`).

    A node on it believes its leases `1 / rate` times as long as its voters do in real time; the lease's
    drift bound (`max_drift`) is what it breaks beyond.
    """
    origin = monotonic_ms()
    return lambda: origin + (monotonic_ms() - origin) * rate


class LeadershipLost(Exception):
    """This node no longer leads the group: stop acting on its behalf."""


@dataclass
class Lease:
    """This node's leadership of one group at one epoch, while it lasts.

    `token` is the fencing token to send with every write; `lost` is set the moment the node stops
    believing it leads (lease expired, superseded, fenced by the storage, released), and when it moves
    to a fresh epoch while leading: `wait_for_leadership` then returns the new epoch's lease at once, and
    its writer raises the fence again with the new token.
    """

    group: str
    epoch: int
    holder: str
    token: str
    deadline: float  # ms on the node's clock
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Callable[[], float] = field(default=monotonic_ms, repr=False, compare=False)

    def remaining_ms(self) -> float:
        return max(0.0, self.deadline - self.clock()) if not self.lost.is_set() else 0.0


def timing_of(cluster: Cluster) -> CandidateTiming:
    t = cluster.timing
    return CandidateTiming(t.lease_ms, t.renew_ms, t.request_timeout_ms, t.max_drift, t.margin_ms)


class Node:
    def __init__(
        self,
        cluster: Cluster,
        node_id: str,
        groups: list[str],
        data_dir: str,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = monotonic_ms,
        clock_rate: float = 1.0,
    ) -> None:
        """`clock` (ms) times every lease; `clock_rate` is how fast it runs against real time, which the
        timers' sleeps are scaled by (1.0 but for `drifting_clock(clock_rate)`)."""
        self.cluster = cluster
        self.id = node_id
        self.member = cluster.member(node_id)
        self.groups = list(dict.fromkeys(groups))
        self.timing = timing_of(cluster)
        self.store = VoterStore(data_dir)
        self.metrics = NodeMetrics()
        self._key = cluster.private_key(node_id)
        self._rng = rng or random.Random()
        self._clock = clock
        self._clock_rate = clock_rate
        self._voter: Voter | None = None
        self._candidates: dict[str, Candidate] = {}
        self.leases: dict[str, Lease] = {}
        self._leader_changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._persist_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.stopping = False  # once set, the voter answers no one: this node is leaving

    # -- life ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        now = self._clock()
        promises = await asyncio.to_thread(self.store.load)
        self._voter = Voter(
            self.id, lease_ms=self.timing.lease_ms, sign=self._sign, promises=promises, now=now
        )
        voters = [m.id for m in self.cluster.members]
        self._candidates = {
            g: Candidate(self.id, g, voters, self.timing, random.Random(self._rng.random()), now)
            for g in self.groups
        }
        timeout = aiohttp.ClientTimeout(total=self.timing.request_timeout_ms / 1000)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit_per_host=8)
        )
        self._loop_task = asyncio.create_task(self._timer_loop(), name=f"{self.id}-timers")
        log_event(log, "node_started", f"{self.id} started ({', '.join(self.groups)})", node=self.id)

    async def stop(self, *, release: bool = True) -> None:
        """Release every lease (graceful handover, unless `release=False`), then stop. Idempotent."""
        if self.stopping:
            return
        self.stopping = True
        if release:
            for group in self.groups:
                await self.release(group, resume_after_ms=None)
            if self._sends:
                await asyncio.wait(self._sends, timeout=self.timing.request_timeout_ms / 1000)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._sends):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def _sign(self, group: str, epoch: int, holder: str) -> str:
        return sign_grant(self._key, self.cluster.id, group, epoch, holder)

    # -- inputs -------------------------------------------------------------------------------------------

    async def receive(self, sender: str, messages: list[Message], *, answers: bool = False) -> list[Message]:
        """Messages from a peer; returns the answers addressed back to it (the HTTP response body).

        `answers`: the messages are themselves answers (a response body, or a local voter's replies): there
        is no response to carry anything back, so messages for `sender` leave as new requests.
        """
        now = self._clock()
        out = Output()
        for message in messages:
            if self.stopping and isinstance(message, Campaign | Renew):
                # A campaign can still reach a leaving node in the response to one of its last requests;
                # its promise would cost an fsync just as the new leader's fence commits on the same disk.
                continue
            if isinstance(message, VOTER_MESSAGES):
                assert self._voter is not None
                out.merge(self._voter.step(sender, message, now))
            else:
                candidate = self._candidates.get(message.group)
                if candidate is not None:
                    out.merge(candidate.step(sender, message, now))
        return await self._carry_out(out, reply_to=None if answers else sender)

    async def release(self, group: str, resume_after_ms: float | None = None) -> bool:
        """Hand the group's lease over now. The node campaigns again after `resume_after_ms` (None: never)."""
        candidate = self._candidate(group)
        was_leader = candidate.role is Role.LEADER
        await self._carry_out(candidate.release(self._clock()))
        if resume_after_ms is not None:
            asyncio.get_running_loop().call_later(resume_after_ms / 1000, self._resume, group)
        return was_leader

    def _resume(self, group: str) -> None:
        task = asyncio.create_task(self._carry_out(self._candidate(group).resume(self._clock())))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def fenced(self, group: str, current_epoch: int) -> None:
        """The storage refused this node's write (409): a newer leader fenced it out."""
        await self._carry_out(self._candidate(group).fenced(current_epoch, self._clock()))

    def _candidate(self, group: str) -> Candidate:
        try:
            return self._candidates[group]
        except KeyError:
            raise KeyError(f"this node does not take part in group {group!r}") from None

    async def _timer_loop(self) -> None:
        # Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as the event is
        # set (which `stop` does: release, then cancel), and the loop would run on forever.
        while not self.stopping:
            wakes = [c.wake_at() for c in self._candidates.values()]
            if self._voter is not None:
                wakes.append(self._voter.wake_at())
            pending = [w for w in wakes if w is not None]
            delay = (min(pending) - self._clock()) / 1000 / self._clock_rate if pending else 1.0
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            now = self._clock()
            out = Output()
            if self._voter is not None:
                out.merge(self._voter.tick(now))
            for candidate in self._candidates.values():
                out.merge(candidate.tick(now))
            await self._carry_out(out)

    # -- outputs ------------------------------------------------------------------------------------------

    async def _carry_out(self, out: Output, reply_to: str | None = None) -> list[Message]:
        """Persist, then send, then apply events. Returns the messages for `reply_to` (the caller)."""
        if out.persist:
            assert self._voter is not None
            async with self._persist_lock:  # whole-state writes, in order: the file only moves forward
                await asyncio.to_thread(self.store.save, self._voter.promises())
        by_peer: dict[str, list[Message]] = defaultdict(list)
        for send in out.messages:
            by_peer[send.to].append(send.message)
        replies = by_peer.pop(reply_to, []) if reply_to is not None else []
        local = by_peer.pop(self.id, [])
        for peer, messages in by_peer.items():
            task = asyncio.create_task(self._post(peer, messages))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        for event in out.events:
            await self._on_event(event)
        if local:
            await self._carry_local(local)
        self._wake.set()
        return replies

    async def _carry_local(self, messages: list[Message]) -> None:
        answers = await self.receive(self.id, messages)
        if answers:
            await self.receive(self.id, answers, answers=True)

    async def _post(self, peer: str, messages: list[Message]) -> None:
        assert self._session is not None
        url = self.cluster.member(peer).url + "/v1/peer"
        body = {"from": self.id, "messages": [wire.encode(m) for m in messages]}
        try:
            async with self._session.post(url, json=body) as resp:
                if resp.status != 200:
                    return
                answer = await resp.json()
            replies = [wire.decode(m) for m in answer.get("messages", [])]
        except (aiohttp.ClientError, TimeoutError, ValueError, wire.WireError):
            self.metrics.peer_errors.labels(peer).inc()
            return  # the core treats silence as silence: its rounds time out
        if replies:
            await self.receive(peer, replies, answers=True)

    async def _on_event(self, event: Any) -> None:
        now = self._clock()
        match event:
            case BecameLeader(group=group, epoch=epoch, signatures=signatures, deadline=deadline):
                token = FencingToken(self.cluster.id, group, epoch, self.id, signatures).encode()
                self.leases[group] = Lease(group, epoch, self.id, token, deadline, clock=self._clock)
                self.metrics.became_leader(group, epoch)
                log_event(
                    log,
                    "became_leader",
                    f"{self.id} became leader of {group} at epoch {epoch}",
                    node=self.id,
                    group=group,
                    epoch=epoch,
                )
            case EpochMoved(group=group, epoch=epoch, previous_epoch=previous, signatures=signatures):
                token = FencingToken(self.cluster.id, group, epoch, self.id, signatures).encode()
                old = self.leases.get(group)
                self.leases[group] = Lease(group, epoch, self.id, token, event.deadline, clock=self._clock)
                if old is not None:
                    old.lost.set()  # its token is the old epoch's: the writer fences again and reads again
                self.metrics.epoch.labels(group).set(epoch)
                log_event(
                    log,
                    "epoch_moved",
                    f"{self.id} moved its leadership of {group} from epoch {previous} to epoch {epoch}",
                    node=self.id,
                    group=group,
                    epoch=epoch,
                    previous_epoch=previous,
                )
            case LeaseExtended(group=group, epoch=epoch, deadline=deadline):
                lease = self.leases.get(group)
                if lease is not None and lease.epoch == epoch:
                    lease.deadline = deadline
                self.metrics.renew_latency.observe((now - (deadline - self.timing.trusted_ms)) / 1000)
            case SteppedDown(group=group, epoch=epoch, reason=reason):
                lease = self.leases.pop(group, None)
                if lease is not None:
                    lease.lost.set()
                self.metrics.stepped_down(group)
                log_event(
                    log,
                    "stepped_down",
                    f"{self.id} stepped down from {group} epoch {epoch}: {reason}",
                    node=self.id,
                    group=group,
                    epoch=epoch,
                    reason=reason,
                )
            case CampaignStarted(group=group, epoch=epoch):
                self.metrics.campaigns.labels(group).inc()
                log_event(
                    log,
                    "campaign_started",
                    f"{self.id} campaigns for {group} epoch {epoch}",
                    logging.DEBUG,
                    node=self.id,
                    group=group,
                    epoch=epoch,
                )
            case CampaignFailed():
                pass
        async with self._leader_changed:
            self._leader_changed.notify_all()

    # -- queries and the Python API -----------------------------------------------------------------------

    def lease(self, group: str) -> Lease | None:
        """The live lease of `group` if this node leads it right now."""
        lease = self.leases.get(group)
        if lease is None or not self._candidate(group).is_leader(self._clock()):
            return None
        return lease

    def leader_view(self, group: str) -> dict[str, Any]:
        """Who leads `group` as this node sees it: itself, or the holder its own voter backs."""
        candidate = self._candidate(group)
        now = self._clock()
        if candidate.is_leader(now):
            return {
                "group": group,
                "node": self.id,
                "role": "leader",
                "leader": self.id,
                "epoch": candidate.epoch,
                "lease_remaining_ms": round(candidate.deadline - now, 1),
            }
        assert self._voter is not None
        holder, epoch, remaining = self._voter.lease(group, now)
        return {
            "group": group,
            "node": self.id,
            "role": candidate.role.value,
            "leader": holder,
            "epoch": epoch,
            "lease_remaining_ms": round(remaining, 1),
        }

    async def wait_for_leadership(self, group: str) -> Lease:
        """Return once this node leads `group` (it keeps campaigning meanwhile)."""
        while True:
            lease = self.lease(group)
            if lease is not None:
                return lease
            async with self._leader_changed:
                await self._leader_changed.wait()

    @contextlib.asynccontextmanager
    async def leadership(self, group: str) -> AsyncIterator[Lease]:
        """`async with node.leadership("orders") as lease:` waits to lead, then hands over on exit."""
        lease = await self.wait_for_leadership(group)
        try:
            yield lease
        finally:
            current = self.leases.get(group)  # not `lease`: the node may have moved to a fresh epoch
            if current is not None and not current.lost.is_set():
                await self.release(group, resume_after_ms=self.timing.lease_ms)
