"""Durability with real OS processes: kill the service mid-load, restart it, restart PostgreSQL itself.

An acknowledged write (200) must survive a SIGKILL of the service; a raised fence must survive a restart
of the service and a crash of PostgreSQL; while the database is down the service answers 503 quickly and
it recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from fencekeeper.pgtemp import PgTemp, PgTempError, free_port
from tests.conftest import REQUIRE_PG

pytestmark = pytest.mark.slow

NS = "durability"
WRITERS = 16
MIN_ACKED = 50  # acknowledged writes before the kill
EPOCH = 3
START_TIMEOUT = 30.0


class Service:
    """One `python -m fencekeeper storage serve` process on a free port, its logs under `workdir`."""

    def __init__(self, db_url: str, workdir: Path, name: str) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_file = workdir / f"{name}.log"
        self.stderr_file = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        command = [sys.executable, "-m", "fencekeeper", "storage", "serve", "--db", self.db_url]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-file", str(self.log_file)]
        with self.stderr_file.open("ab") as stderr:
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)

    def output(self) -> str:
        """The end of the service's stderr and log, for failure messages."""
        text = ""
        for path in (self.stderr_file, self.log_file):
            if path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return text

    def stop_with(self, sig: int) -> int:
        """Send `sig` and wait for the process to end; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


async def start(service: Service, session: aiohttp.ClientSession) -> None:
    """Spawn the service and wait until /healthz answers (or fail with its output)."""
    service.spawn()
    assert service.proc is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            pytest.fail(f"service exited with {service.proc.returncode}:\n{service.output()}")
        try:
            async with session.get(f"{service.base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    pytest.fail(f"service not healthy after {START_TIMEOUT}s:\n{service.output()}")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[[str], Service]]:
    """Makes Service objects; every process still running at the end is killed."""
    made: list[Service] = []

    def make(db_url: str) -> Service:
        made.append(Service(db_url, tmp_path, f"service-{len(made)}"))
        return made[-1]

    yield make
    for service in made:
        service.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
        yield client


def token(epoch: int) -> dict[str, str]:
    return {"Fencing-Token": str(epoch)}


async def history(session: aiohttp.ClientSession, base: str) -> dict[int, dict]:
    """Every accepted write of the namespace by seq, paging with `after`."""
    rows: dict[int, dict] = {}
    after = 0
    while True:
        url = f"{base}/v1/namespaces/{NS}/history?limit=1000&values=true&after={after}"
        async with session.get(url) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        if not page["items"]:
            return rows
        for item in page["items"]:
            rows[item["seq"]] = item
        after = page["next_after"]


@dataclass
class Load:
    """What the writers saw: acknowledged writes and the requests cut off by the kill."""

    acked: list[tuple[str, bytes, int, int]] = field(default_factory=list)  # key, value, version, seq
    cut_off: int = 0
    in_flight: int = 0
    unexpected: list[str] = field(default_factory=list)
    killed: asyncio.Event = field(default_factory=asyncio.Event)


async def writer(session: aiohttp.ClientSession, base: str, index: int, load: Load) -> None:
    """PUT `w<index>` over and over with a counter in the value until the service dies."""
    key = f"w{index}"
    n = 0
    while True:
        n += 1
        value = f"{key}:{n}".encode()
        load.in_flight += 1
        try:
            async with session.put(
                f"{base}/v1/namespaces/{NS}/objects/{key}", data=value, headers=token(EPOCH)
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    load.unexpected.append(f"{resp.status} {body[:200]!r}")
                    return
                answer = await resp.json()
        except (TimeoutError, aiohttp.ClientError):
            if load.killed.is_set():
                load.cut_off += 1
                return
            raise
        finally:
            load.in_flight -= 1
        load.acked.append((key, value, answer["version"], answer["seq"]))


async def test_sigkill_mid_load_loses_no_acknowledged_write(
    db_url: str, services: Callable[[str], Service], session: aiohttp.ClientSession
) -> None:
    first = services(db_url)
    await start(first, session)
    load = Load()
    connector = aiohttp.TCPConnector(limit=WRITERS)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=20)
    ) as load_session:
        tasks = [asyncio.create_task(writer(load_session, first.base, i, load)) for i in range(WRITERS)]
        try:
            # About a second of load, and enough acknowledged writes to mean something on a busy machine.
            started = time.monotonic()
            while time.monotonic() - started < 1.0 or len(load.acked) < MIN_ACKED:
                assert time.monotonic() - started < 30, f"only {len(load.acked)} writes acknowledged in 30s"
                if any(task.done() for task in tasks):
                    break
                await asyncio.sleep(0.05)
            done = [task for task in tasks if task.done()]
            assert not done, load.unexpected or [task.exception() for task in done]
            load.killed.set()
            in_flight = load.in_flight
            assert first.stop_with(signal.SIGKILL) == -signal.SIGKILL
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
        finally:
            for task in tasks:
                task.cancel()
    assert load.unexpected == []
    assert in_flight > 0, "the kill must land while requests are in flight"
    assert load.cut_off == WRITERS  # every writer was stopped by the kill, not by anything else
    assert len(load.acked) >= MIN_ACKED

    second = services(db_url)
    await start(second, session)
    rows = await history(session, second.base)
    for key, value, version, seq in load.acked:
        assert seq in rows, f"acknowledged write {key} v{version} (seq {seq}) is lost"
        row = rows[seq]
        assert (row["key"], row["version"], row["op"], row["epoch"]) == (key, version, "put", EPOCH)
        assert base64.b64decode(row["value_base64"]) == value
    newest: dict[str, tuple[int, bytes]] = {}
    for key, value, version, _seq in load.acked:
        newest[key] = max(newest.get(key, (0, b"")), (version, value))
    for key, (version, value) in newest.items():
        async with session.get(f"{second.base}/v1/namespaces/{NS}/objects/{key}") as resp:
            assert resp.status == 200
            stored_version = int(resp.headers["ETag"].strip('"'))
            body = await resp.read()
        # An unacknowledged in-flight write may have committed after the last answer: never older.
        assert stored_version >= version, f"{key}: stored v{stored_version} < acknowledged v{version}"
        if stored_version == version:
            assert body == value
        else:
            assert stored_version == version + 1, f"{key}: v{stored_version} after v{version}?"
    # The restarted service takes writes where the killed one stopped.
    async with session.put(
        f"{second.base}/v1/namespaces/{NS}/objects/w0", data=b"x", headers=token(EPOCH)
    ) as r:
        assert r.status == 200
        assert (await r.json())["seq"] > max(seq for *_, seq in load.acked)


async def expect_status(
    session: aiohttp.ClientSession, base: str, epoch: int, status: int, value: bytes
) -> None:
    async with session.put(f"{base}/v1/namespaces/{NS}/objects/k", data=value, headers=token(epoch)) as resp:
        body = await resp.text()
        assert resp.status == status, body
        if status == 409:
            problem = await resp.json(content_type=None)
            assert problem["type"] == "urn:fencekeeper:problem:stale-token"
            assert problem["token_epoch"] == epoch


async def test_fence_survives_service_restart(
    db_url: str, services: Callable[[str], Service], session: aiohttp.ClientSession
) -> None:
    service = services(db_url)
    await start(service, session)
    async with session.post(f"{service.base}/v1/namespaces/{NS}/fence", headers=token(7)) as resp:
        assert resp.status == 200, await resp.text()
    assert service.stop_with(signal.SIGTERM) == 0  # graceful stop

    service = services(db_url)
    await start(service, session)
    await expect_status(session, service.base, 6, 409, b"stale")
    await expect_status(session, service.base, 7, 200, b"seven")
    await expect_status(session, service.base, 8, 200, b"eight")  # raises the fence to 8 with the write
    assert service.stop_with(signal.SIGKILL) == -signal.SIGKILL  # no goodbye at all

    service = services(db_url)
    await start(service, session)
    await expect_status(session, service.base, 7, 409, b"stale")
    async with session.get(f"{service.base}/v1/namespaces/{NS}/objects/k") as resp:
        assert resp.status == 200
        assert await resp.read() == b"eight"
        assert resp.headers["Fencing-Epoch"] == "8"
    async with session.get(f"{service.base}/v1/namespaces/{NS}") as resp:
        assert (await resp.json())["fence_epoch"] == 8


@pytest.fixture
def pg_temp() -> Iterator[PgTemp]:
    """A private PostgreSQL server that this test may crash (never the shared one on 5432)."""
    try:
        pg = PgTemp()
    except PgTempError as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (FENCEKEEPER_REQUIRE_POSTGRES=1): {exc}")
        pytest.skip(str(exc))
    with pg:
        yield pg


async def steady_writer(
    session: aiohttp.ClientSession,
    base: str,
    index: int,
    stop: asyncio.Event,
    seen: list[int],
    acked: dict[int, tuple[str, bytes, int]],
) -> None:
    """PUT `s<index>` at epoch 7 until `stop`, noting every status; a 503 backs off briefly."""
    key = f"s{index}"
    n = 0
    while not stop.is_set():
        n += 1
        value = f"{key}:{n}".encode()
        async with session.put(
            f"{base}/v1/namespaces/{NS}/objects/{key}", data=value, headers=token(7)
        ) as resp:
            seen.append(resp.status)
            if resp.status == 200:
                answer = await resp.json()
                acked[answer["seq"]] = (key, value, answer["version"])
            else:
                await resp.read()
                await asyncio.sleep(0.05)


async def expect_unavailable(session: aiohttp.ClientSession, method: str, url: str, **kwargs) -> None:
    """The service answers 503 database-unavailable promptly while the database is down."""
    started = time.monotonic()
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.text()
        assert resp.status == 503, f"{method} {url}: {resp.status} {body}"
        assert resp.content_type == "application/problem+json"
        assert (await resp.json(content_type=None))["type"] == "urn:fencekeeper:problem:database-unavailable"
        assert resp.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 10, f"{method} {url} took {time.monotonic() - started:.1f}s"


@pytest.mark.postgres
async def test_fence_survives_postgres_crash_and_service_recovers(
    pg_temp: PgTemp, services: Callable[[str], Service], session: aiohttp.ClientSession
) -> None:
    service = services(pg_temp.url)
    await start(service, session)
    base = service.base
    async with session.post(f"{base}/v1/namespaces/{NS}/fence", headers=token(7)) as resp:
        assert resp.status == 200, await resp.text()
    await expect_status(session, base, 7, 200, b"before")

    # Crash and restart PostgreSQL with no request in between: the pooled connections are all dead.
    pg_temp.stop(mode="immediate")
    assert not pg_temp.running
    pg_temp.start()
    await expect_status(session, base, 6, 409, b"stale")
    await expect_status(session, base, 7, 200, b"after first crash")

    # Crash it again under load and keep asking while it is down: 503 problems, never a hang or a 500.
    stop = asyncio.Event()
    seen: list[int] = []
    acked: dict[int, tuple[str, bytes, int]] = {}
    load = [asyncio.create_task(steady_writer(session, base, i, stop, seen, acked)) for i in range(4)]
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(pg_temp.stop, "immediate")
        down_from = len(seen)
        url = f"{base}/v1/namespaces/{NS}"
        await expect_unavailable(session, "PUT", f"{url}/objects/k", data=b"x", headers=token(7))
        await expect_unavailable(session, "PUT", f"{url}/objects/k", data=b"x", headers=token(6))
        await expect_unavailable(session, "POST", f"{url}/fence", headers=token(9))
        await expect_unavailable(session, "GET", f"{url}/objects/k")
        await expect_unavailable(session, "GET", f"{base}/readyz")
        assert service.proc is not None and service.proc.poll() is None
        await asyncio.to_thread(pg_temp.start)
        up_from = len(seen)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*load), timeout=20)
    assert set(seen) <= {200, 503}, f"only 200 or 503 while the database comes and goes: {set(seen)}"
    assert 200 in seen[:down_from] and 503 in seen[down_from:up_from] and 200 in seen[up_from:]

    await expect_status(session, base, 6, 409, b"stale")
    async with session.get(f"{base}/v1/namespaces/{NS}/objects/k") as resp:
        assert resp.status == 200
        assert await resp.read() == b"after first crash"
    await expect_status(session, base, 7, 200, b"after second crash")
    async with session.get(f"{base}/v1/namespaces/{NS}") as resp:
        info = await resp.json()
    assert info["fence_epoch"] == 7
    rows = await history(session, base)
    for seq, (key, value, version) in acked.items():
        assert seq in rows, f"acknowledged write {key} v{version} (seq {seq}) lost in the crash"
        assert (rows[seq]["key"], rows[seq]["version"]) == (key, version)
        assert base64.b64decode(rows[seq]["value_base64"]) == value
    assert service.proc.poll() is None, "the service must ride out the database restarts"
