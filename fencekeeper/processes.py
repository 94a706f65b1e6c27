"""Real OS processes of fencekeeper's components, started and stopped for the demo, the lab and tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp


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
        port: int | None = None,
        fencing: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.db_url = db_url
        self.log_file = log_file
        self.port = port or free_port()
        self.fencing = fencing
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
            "127.0.0.1",
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
