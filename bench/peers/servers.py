"""The peers' servers from their Debian packages, as processes of our own on loopback (never the system
services): a three-member etcd cluster and a standalone ZooKeeper, each with its data in our directory."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from fencekeeper.processes import NodeProcess, free_base_port, free_port

PACKAGES = {"etcd": "etcd-server", "zookeeper": "zookeeper"}
ZK_JAR = Path("/usr/share/java/zookeeper.jar")  # its manifest's Class-Path names the Debian jars it needs
ZK_TICK_MS = 200  # a session timeout may be 2 to 20 ticks: the 2 s TTL needs a tick of 1 s or less


def _package_missing(peer: str) -> bool:
    return shutil.which("etcd") is None if peer == "etcd" else not ZK_JAR.exists()


def unavailable() -> dict[str, str]:
    """Each peer that cannot run here, and why."""
    why = {
        peer: f"{package} is not installed" for peer, package in PACKAGES.items() if _package_missing(peer)
    }
    if "zookeeper" not in why and shutil.which("java") is None:
        why["zookeeper"] = "java is not installed"
    elif "zookeeper" not in why and importlib.util.find_spec("kazoo") is None:
        why["zookeeper"] = "kazoo is not installed (pip install -e '.[peers]')"
    return why


def install_missing(say: Callable[[str], None]) -> dict[str, str]:
    """Install the missing Debian packages when root (the bench's only side effect outside its temp
    directory); return the peers that still cannot run, and why."""
    why = unavailable()
    packages = [PACKAGES[peer] for peer in why if _package_missing(peer)]
    if not packages:
        return why
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        hint = "; run as root on Debian to install it with apt-get"
        return {peer: reason + (hint if _package_missing(peer) else "") for peer, reason in why.items()}
    say(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", *packages], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        say(f"apt-get install failed: {done.stderr.strip()[-500:]}")
    return unavailable()


async def _wait(
    ready: Callable[[], Awaitable[bool]], procs: list[NodeProcess], what: str, within: float = 30
) -> None:
    """Until `ready()` answers true; RuntimeError with its stderr's tail if a process exits first."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                tail = proc.err_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what} {proc.id} exited: {tail}")
        if await ready():
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {within:.0f} s")


class EtcdCluster:
    """Three etcd members with their default timing (heartbeat 100 ms, election 1 s), client and peer
    URLs on free loopback ports."""

    def __init__(self, directory: Path) -> None:
        base = free_base_port(6)
        clients = [f"http://127.0.0.1:{base + i}" for i in range(3)]
        peers = [f"http://127.0.0.1:{base + 3 + i}" for i in range(3)]
        initial = ",".join(f"e{i}={url}" for i, url in enumerate(peers))
        self.endpoints = clients
        self.members = []
        for i, (client, peer) in enumerate(zip(clients, peers, strict=True)):
            args = [
                "etcd",
                f"--name=e{i}",
                f"--data-dir={directory / f'e{i}'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token=bench-{base}",
                "--logger=zap",
            ]
            err = directory / f"e{i}.err"
            self.members.append(NodeProcess(f"e{i}", args, client, err, err))

    async def start(self) -> None:
        for member in self.members:
            member.spawn()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:

            async def healthy() -> bool:
                for url in self.endpoints:
                    try:
                        async with session.get(url + "/health") as resp:
                            if (await resp.json(content_type=None)).get("health") != "true":
                                return False
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        return False
                return True

            await _wait(healthy, self.members, "etcd member")

    def stop(self) -> None:
        for member in self.members:
            member.kill()


class ZooKeeperServer:
    """A standalone ZooKeeper (ZooKeeperServerMain) with a small tick, so that a 2 s session is allowed."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        data = directory / "data"
        data.mkdir(parents=True)
        config = directory / "zoo.cfg"
        config.write_text(
            f"tickTime={ZK_TICK_MS}\ndataDir={data}\nclientPort={self.port}\nclientPortAddress=127.0.0.1\n"
            f"minSessionTimeout={2 * ZK_TICK_MS}\nmaxSessionTimeout={20 * ZK_TICK_MS}\n"
            "admin.enableServer=false\n4lw.commands.whitelist=srvr\n"
        )
        args = ["java", "-Xmx512m", "-cp", str(ZK_JAR), "org.apache.zookeeper.server.ZooKeeperServerMain"]
        err = directory / "zookeeper.err"
        self.proc = NodeProcess("zookeeper", [*args, str(config)], self.hosts, err, err)

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serving(self) -> bool:
        """Whether it answers `srvr` as a standalone server."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"srvr")
            return b"Mode: standalone" in await asyncio.wait_for(reader.read(), 2)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def start(self) -> None:
        self.proc.spawn()
        await _wait(self.serving, [self.proc], "zookeeper")

    def stop(self) -> None:
        self.proc.kill()
