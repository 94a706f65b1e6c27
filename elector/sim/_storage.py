"""The storage service as the simulator sees it: a fence per group, a counter, and the workload using it.

`StorageModel` applies the same rule as `storage_service` (accept at or above the fence, raise the fence,
refuse below it). `Workload` is what the lab's nodes run: fence, read the counter once, then write
counter + 1 after each acknowledged write while the node believes it leads, as a leader that trusts its
exclusivity would. Links between nodes and the storage are FIFO (they are TCP connections).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STORAGE = "storage"


@dataclass(frozen=True, slots=True)
class FenceReq:
    group: str
    epoch: int
    req: int


@dataclass(frozen=True, slots=True)
class ReadReq:
    group: str
    epoch: int
    req: int


@dataclass(frozen=True, slots=True)
class WriteReq:
    group: str
    epoch: int
    value: int
    req: int


@dataclass(frozen=True, slots=True)
class StorageReply:
    group: str
    req: int
    ok: bool
    value: int | None = None  # the counter, for a read
    fence: int = 0


StorageMessage = FenceReq | ReadReq | WriteReq | StorageReply


@dataclass
class Accepted:
    at: float
    group: str
    epoch: int
    value: int
    writer: str


@dataclass
class StorageModel:
    fencing: bool = True
    fences: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    accepted: list[Accepted] = field(default_factory=list)
    rejected: int = 0

    def handle(self, src: str, msg: StorageMessage, now: float) -> StorageReply:
        fence = self.fences.get(msg.group, 0)
        if isinstance(msg, ReadReq):
            return StorageReply(msg.group, msg.req, True, self.counters.get(msg.group, 0), fence)
        assert isinstance(msg, FenceReq | WriteReq)
        if self.fencing and msg.epoch < fence:
            self.rejected += 1
            return StorageReply(msg.group, msg.req, False, None, fence)
        self.fences[msg.group] = max(fence, msg.epoch)
        if isinstance(msg, WriteReq):
            self.counters[msg.group] = msg.value
            self.accepted.append(Accepted(now, msg.group, msg.epoch, msg.value, src))
        return StorageReply(msg.group, msg.req, True, None, self.fences[msg.group])


@dataclass
class Workload:
    """One node's writer for one group; its clock is the node's local clock."""

    node: str
    group: str
    interval_ms: float
    timeout_ms: float
    epoch: int | None = None  # the epoch it writes for; None while not leading
    phase: str = "idle"  # idle -> fencing -> reading -> writing
    counter: int = 0
    next_write: float | None = None
    waiting: tuple[int, float] | None = None  # (request id, sent at) of the outstanding request
    _req: int = 0

    def lead(self, epoch: int, now: float) -> list[StorageMessage]:
        self.epoch, self.phase = epoch, "fencing"
        return [self._ask(FenceReq(self.group, epoch, self._next()), now)]

    def stop(self) -> None:
        self.epoch, self.phase, self.next_write, self.waiting = None, "idle", None, None

    def _next(self) -> int:
        self._req += 1
        return self._req

    def _ask(self, msg: StorageMessage, now: float) -> StorageMessage:
        self.waiting = (msg.req, now)
        return msg

    def wake_at(self) -> float | None:
        if self.waiting is not None:
            return self.waiting[1] + self.timeout_ms
        return self.next_write

    def tick(self, now: float, believes: bool) -> list[StorageMessage]:
        """Time passes. `believes`: whether the node's candidate thinks it leads right now."""
        if self.epoch is None:
            return []
        if not believes:
            self.stop()
            return []
        if self.waiting is not None and now >= self.waiting[1] + self.timeout_ms:
            if self.phase == "fencing":  # never read before the fence stands: an old leader could slip in
                return [self._ask(FenceReq(self.group, self.epoch, self._next()), now)]
            # No answer: the write may or may not have landed. Read again (the link is FIFO, so the read
            # sees every write sent before it that arrives at all).
            self.phase = "reading"
            return [self._ask(ReadReq(self.group, self.epoch, self._next()), now)]
        if (
            self.phase == "writing"
            and self.waiting is None
            and self.next_write is not None
            and now >= self.next_write
        ):
            self.next_write = None
            return [self._ask(WriteReq(self.group, self.epoch, self.counter + 1, self._next()), now)]
        return []

    def reply(self, msg: StorageReply, now: float) -> tuple[bool, list[StorageMessage]]:
        """An answer from the storage: (False when it fenced this leader out, requests to send next)."""
        if self.epoch is None or self.waiting is None or msg.req != self.waiting[0]:
            return True, []
        self.waiting = None
        if not msg.ok:
            self.stop()
            return False, []
        if self.phase == "fencing":
            self.phase = "reading"
            return True, [self._ask(ReadReq(self.group, self.epoch, self._next()), now)]
        if self.phase == "reading":
            assert msg.value is not None, msg  # an answer to a read always carries the counter
            self.counter = msg.value
        else:
            self.counter += 1
        self.phase = "writing"
        self.next_write = now + self.interval_ms
        return True, []
