"""The lab's fault-injecting proxy, on real sockets on 127.0.0.1: each fault does what it says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from fencekeeper.lab.proxy import Faults, Link, ProxySet


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with ProxySet(seed=7) as proxies:
        yield await proxies.add("a->echo", ("127.0.0.1", port))
    server.close()


async def _connect(link: Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", link.port)


async def _roundtrip(link: Link, payload: bytes = b"ping", wait: float = 2.0) -> tuple[bytes, float]:
    reader, writer = await _connect(link)
    started = time.monotonic()
    try:
        writer.write(payload)
        await writer.drain()
        data = b""
        while len(data) < len(payload):
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - started
    finally:
        writer.close()


async def test_clean_link_forwards_both_ways(link: Link) -> None:
    data, _ = await _roundtrip(link, b"hello" * 1000)
    assert data == b"hello" * 1000


async def test_latency_delays_each_direction(link: Link) -> None:
    link.set("up", latency_ms=150)
    link.set("down", latency_ms=100)
    data, took = await _roundtrip(link)
    assert data == b"ping" and took >= 0.24


async def test_hold_delays_data_but_keeps_order_and_delivers_after_heal(link: Link) -> None:
    reader, writer = await _connect(link)
    link.set("up", hold_ms=300)
    started = time.monotonic()
    writer.write(b"first")
    await writer.drain()
    await asyncio.sleep(0.05)
    link.heal()  # data already held still waits; later data queues behind it
    writer.write(b"second")
    data = b""
    while len(data) < len(b"firstsecond"):
        data += await asyncio.wait_for(reader.read(100), 2)
    assert data == b"firstsecond" and time.monotonic() - started >= 0.29
    writer.close()


async def test_trap_holds_from_the_next_chunk_until_released(link: Link) -> None:
    reader, writer = await _connect(link)
    caught = link.trap("up")
    assert not caught.is_set()
    writer.write(b"write")
    await writer.drain()
    await asyncio.wait_for(caught.wait(), 2)
    with pytest.raises(TimeoutError):  # held: nothing reaches the target, so nothing echoes back
        await asyncio.wait_for(reader.read(100), 0.3)
    writer.write(b"-next")
    link.release("up")
    data = b""
    while len(data) < len(b"write-next"):
        data += await asyncio.wait_for(reader.read(100), 2)
    assert data == b"write-next"
    assert (await _roundtrip(link))[0] == b"ping"  # disarmed: later traffic passes
    writer.close()


async def test_cut_resets_existing_and_new_connections_until_healed(link: Link) -> None:
    reader, writer = await _connect(link)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.read(10), 2) == b"x"
    link.cut()
    with pytest.raises(ConnectionError):
        writer.write(b"y")
        await writer.drain()
        if not await asyncio.wait_for(reader.read(10), 2):
            raise ConnectionResetError("closed")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _roundtrip(link)
    link.heal()
    assert (await _roundtrip(link))[0] == b"ping"


async def test_blackhole_accepts_and_forwards_nothing(link: Link) -> None:
    link.set("up", blackhole=True)
    with pytest.raises(TimeoutError):
        await _roundtrip(link, wait=0.3)
    link.heal()
    assert (await _roundtrip(link))[0] == b"ping"


async def test_one_way_blackhole_downstream_only(link: Link) -> None:
    link.set("down", blackhole=True)  # requests arrive, answers are lost
    assert link.faults["up"] == Faults()
    with pytest.raises(TimeoutError):
        await _roundtrip(link, wait=0.3)


async def test_reset_probability_one_resets(link: Link) -> None:
    link.set("up", reset=1.0)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        data, _ = await _roundtrip(link)
        if not data:
            raise ConnectionResetError("closed")


async def test_drop_probability_one_loses_everything(link: Link) -> None:
    link.set("up", drop=1.0)
    with pytest.raises(TimeoutError):
        await _roundtrip(link, wait=0.3)


async def test_bandwidth_and_slicer_slow_a_transfer_but_keep_the_bytes(link: Link) -> None:
    payload = bytes(range(256)) * 40  # 10 KiB
    link.set("down", bandwidth_kbps=40)  # ~0.25 s for 10 KiB
    data, took = await _roundtrip(link, payload)
    assert data == payload and took >= 0.2
    link.heal()
    link.set("up", slice_bytes=1000, slice_delay_ms=20)  # 11 pieces, 10 gaps
    data, took = await _roundtrip(link, payload)
    assert data == payload and took >= 0.18


async def test_target_down_resets_the_client() -> None:
    async with ProxySet() as proxies:
        from fencekeeper.processes import free_port

        link = await proxies.add("a->nowhere", ("127.0.0.1", free_port()))
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            data, _ = await _roundtrip(link)
            if not data:
                raise ConnectionResetError("closed")


async def test_active_lists_only_the_faults_set() -> None:
    assert Faults().active() == {}
    assert Faults(cut=True, latency_ms=5).active() == {"cut": True, "latency_ms": 5}
