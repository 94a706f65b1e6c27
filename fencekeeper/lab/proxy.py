"""A fault-injecting TCP proxy, modelled on Toxiproxy, run inside the lab's event loop.

Why: to partition, slow down or delay the traffic of real node processes without root, iptables or
network namespaces. Every directed link (node A's requests to node B, node A's requests to the storage) is
one listener forwarding to its target; the lab points each node at its own listeners, so faults can be
set per link and per direction:

* ``up`` (upstream) is the data the connecting side sends (requests); ``down`` is what comes back.
* ``cut``: new connections are reset at once and existing ones are reset (either direction cuts the link).
* ``blackhole``: data is read and thrown away; nothing is forwarded, connections stay open.
* ``latency_ms`` ± ``jitter_ms``: each chunk is delivered that much later (order is kept).
* ``hold_ms``: like latency, for the old-leader-write-arrives-after-the-fence experiments.
* ``drop``: probability that a chunk is silently discarded (the stream then stalls, as after loss).
* ``reset``: probability, per chunk, that the connection is reset (RST) instead.
* ``bandwidth_kbps``: at most that many KiB per second.
* ``slice_bytes`` / ``slice_delay_ms``: the slicer: chunks are cut into small pieces sent apart.
* ``trap`` / ``release`` (not a Toxiproxy toxic): hold everything from the next chunk on until released,
  and say when that chunk came; the lab pauses a node the moment its next write leaves it.

    async with ProxySet(seed=1) as proxies:
        link = await proxies.add("n1->n2", ("127.0.0.1", 7002))
        link.set("up", latency_ms=100)
        link.cut()
        link.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, fields, replace
from types import TracebackType
from typing import Literal, Self

Direction = Literal["up", "down"]
DIRECTIONS: tuple[Direction, Direction] = ("up", "down")
CHUNK = 65536


@dataclass(frozen=True)
class Faults:
    """The faults of one direction of one link. The default is a clean pass-through."""

    cut: bool = False
    blackhole: bool = False
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    hold_ms: float = 0.0
    drop: float = 0.0
    reset: float = 0.0
    bandwidth_kbps: float = 0.0
    slice_bytes: int = 0
    slice_delay_ms: float = 0.0

    def active(self) -> dict[str, object]:
        """The non-default settings (for logs and reports)."""
        clean = Faults()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(clean, f.name)
        }


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: the peer sees ECONNRESET, as when a middlebox kills a flow."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Conn:
    """One proxied connection: two pumps (reader -> delivery queue -> writer), one per direction."""

    def __init__(self, link: Link, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.link = link
        self.client_r, self.client_w = client
        self.server_w: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def run(self) -> None:
        try:
            server_r, self.server_w = await asyncio.open_connection(*self.link.target)
        except OSError:
            _reset(self.client_w)  # the target is down: the client sees what a direct connection would
            return
        if self.closed:  # reset while connecting
            _reset(self.server_w)
            return
        self.tasks = [
            asyncio.create_task(self._pump("up", self.client_r, self.server_w)),
            asyncio.create_task(self._pump("down", server_r, self.client_w)),
        ]
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.close()

    def reset(self) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        _reset(self.client_w)
        if self.server_w is not None:
            _reset(self.server_w)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_w, self.server_w):
            if writer is not None:
                writer.close()

    async def _pump(
        self, direction: Direction, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(direction, queue, writer))
        last_at = 0.0
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                faults = self.link.faults[direction]
                if not data:
                    queue.put_nowait((last_at, None))
                    break
                if faults.cut or self.link.rng.random() < faults.reset:
                    self.reset()
                    return
                if faults.blackhole or self.link.rng.random() < faults.drop:
                    continue
                if (caught := self.link.traps.pop(direction, None)) is not None:
                    self.link.gates[direction].clear()
                    caught.set()
                delay = faults.latency_ms + faults.hold_ms
                if faults.jitter_ms:
                    delay += self.link.rng.uniform(-faults.jitter_ms, faults.jitter_ms)
                last_at = max(last_at, loop.time() + max(0.0, delay) / 1000)
                queue.put_nowait((last_at, data))
            await sender
        finally:
            sender.cancel()

    async def _send(
        self,
        direction: Direction,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        writer: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            at, data = await queue.get()
            if (wait := at - loop.time()) > 0:
                await asyncio.sleep(wait)
            await self.link.gates[direction].wait()
            if data is None:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            faults = self.link.faults[direction]
            pieces = [data]
            if faults.slice_bytes > 0:
                pieces = [data[i : i + faults.slice_bytes] for i in range(0, len(data), faults.slice_bytes)]
            try:
                for i, piece in enumerate(pieces):
                    if i and faults.slice_delay_ms:
                        await asyncio.sleep(faults.slice_delay_ms / 1000)
                    if faults.bandwidth_kbps > 0:  # the piece takes this long to cross the link
                        await asyncio.sleep(len(piece) / (faults.bandwidth_kbps * 1024))
                    writer.write(piece)
                    await writer.drain()
            except (ConnectionError, OSError):
                self.reset()
                return


class Link:
    """One listener on 127.0.0.1 forwarding to `target`, with faults per direction."""

    def __init__(self, name: str, target: tuple[str, int], rng: random.Random) -> None:
        self.name = name
        self.target = target
        self.rng = rng
        self.faults: dict[Direction, Faults] = {"up": Faults(), "down": Faults()}
        self.conns: set[_Conn] = set()
        self.traps: dict[Direction, asyncio.Event] = {}
        self.gates: dict[Direction, asyncio.Event] = {d: asyncio.Event() for d in DIRECTIONS}
        for gate in self.gates.values():
            gate.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if any(f.cut for f in self.faults.values()):
            _reset(writer)
            return
        conn = _Conn(self, (reader, writer))
        self.conns.add(conn)
        try:
            await conn.run()
        finally:
            self.conns.discard(conn)

    def set(self, direction: Direction | Literal["both"] = "both", **faults: float | bool | int) -> None:
        """Change faults (merged into the current ones); `cut` resets every open connection now."""
        for d in DIRECTIONS if direction == "both" else (direction,):
            self.faults[d] = replace(self.faults[d], **faults)
        if faults.get("cut"):
            for conn in list(self.conns):
                conn.reset()

    def cut(self, direction: Direction | Literal["both"] = "both") -> None:
        self.set(direction, cut=True)

    def trap(self, direction: Direction = "up") -> asyncio.Event:
        """Hold the next chunk to cross in `direction`, and all after it, until `release`; the event returned
        is set when that chunk arrives."""
        caught = asyncio.Event()
        self.traps[direction] = caught
        return caught

    def release(self, direction: Direction = "up") -> None:
        """Disarm the trap and let what it held through, in order."""
        self.traps.pop(direction, None)
        self.gates[direction].set()

    def heal(self) -> None:
        """Back to a clean pass-through (data already delayed still arrives late, in order)."""
        self.faults = {"up": Faults(), "down": Faults()}
        for d in DIRECTIONS:
            self.release(d)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.reset()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


class ProxySet:
    """All the links of one lab run, named; closing it closes every listener and connection."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.links: dict[str, Link] = {}

    async def add(self, name: str, target: tuple[str, int]) -> Link:
        link = Link(name, target, random.Random(self.rng.random()))
        await link.start()
        self.links[name] = link
        return link

    def __getitem__(self, name: str) -> Link:
        return self.links[name]

    def heal_all(self) -> None:
        for link in self.links.values():
            link.heal()

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
