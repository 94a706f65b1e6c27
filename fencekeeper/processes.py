"""Real OS processes of fencekeeper's components, started and stopped for the demo, the lab and tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp


def free_base_port(count: int) -> int:
    """The first of `count` consecutive free ports, below the kernel's ephemeral range (32768+), for a
    cluster file whose members sit on consecutive ports."""
    for _ in range(500):
        base = random.randrange(20000, 32000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free range of ports")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class StorageProcess:
    """`fencekeeper storage serve` as a child process, ready once /healthz answers."""

    def __init__(
        self,
        db_url: str,
        log_file: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        fencing: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.db_url = db_url
        self.log_file = log_file
        self.host = host
        self.port = port or free_port(host)
        self.fencing = fencing
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fencekeeper",
            "storage",
            "serve",
            "--db",
            self.db_url,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--fencing",
            "on" if self.fencing else "off",
            "--log-file",
            str(self.log_file),
            *self.extra_args,
        ]

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process (its own session, so a signal reaches it and nothing else)."""
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        return self.proc

    async def start(self, ready_within: float = 30.0) -> None:
        """Start the process and wait until it serves; raises RuntimeError with its stderr if it dies."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + ready_within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                    raise RuntimeError(f"storage service exited with {self.proc.returncode}: {err}")
                try:
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        self.kill()
        raise RuntimeError(f"storage service did not answer on {self.url} within {ready_within:.0f} s")

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL, as a crash would; returns once the process is gone."""
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        self.signal(signal.SIGTERM)
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def wait(self, timeout: float | None = None) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)
            if self.proc.stderr:
                self.proc.stderr.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def node_command(
    cluster: str | os.PathLike[str], node_id: str, data_dir: str | os.PathLike[str], group: str, *options: str
) -> list[str]:
    """The `fencekeeper node run` command line of one member, with this interpreter, plus `options`."""
    return [
        sys.executable, "-m", "fencekeeper", "node", "run",
        "--cluster", str(cluster), "--id", node_id, "--data-dir", str(data_dir), "--group", group, *options,
    ]  # fmt: skip


class NodeProcess:
    """`fencekeeper node run` as a child process in its own session (signals reach it and nothing else).

    Why a class of its own: the lab kills, pauses and restarts nodes by id many times in one run, and
    must be able to stop every one of them whatever happened, stopped (SIGSTOP) ones included.
    """

    def __init__(self, node_id: str, args: list[str], url: str, log_file: Path, err_file: Path) -> None:
        self.id = node_id
        self.args = args
        self.url = url
        self.log_file = log_file
        self.err_file = err_file
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with open(self.err_file, "ab") as err:
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL, as a crash would; returns once the process is gone."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a graceful handover), then SIGKILL if it does not exit in time."""
        self.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The node's JSON log lines (all, or those of one `event`), as written so far."""
        if not self.log_file.exists():
            return []
        lines = [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]
        return [line for line in lines if event is None or line.get("event") == event]

    async def wait_serving(self, within: float = 20.0) -> None:
        """Return once /healthz answers; RuntimeError with the tail of its stderr if it exits first."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() < deadline:
                if not self.alive():
                    tail = self.err_file.read_text(errors="replace")[-2000:] if self.err_file.exists() else ""
                    raise RuntimeError(f"node {self.id} exited: {tail}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"node {self.id} did not serve on {self.url} within {within:.0f} s")
