"""`fencekeeper lab run`: a storage service, N real nodes running the counter workload, every link proxied.

Why proxies: every byte between two nodes, and between a node and the storage, crosses a `Link` the runner
owns (`fencekeeper/lab/proxy.py`), so a scenario can cut, delay or hold any directed link without root.
Each node gets its own copy of cluster.toml in which the *other* members' addresses are its outbound
listeners (keys and cluster id unchanged), and a storage URL that is its own listener to the storage.
With `--net netns` (root) there are no proxies: each node runs in its own network namespace and the
partitions are iptables rules there (`fencekeeper/lab/netns.py`).

Everything the run starts is stopped in `finally` blocks (Ctrl-C included): nodes by process group,
then the storage, the proxies, a throwaway PostgreSQL and the namespaces. The run directory keeps the
evidence: run.json, nemesis.jsonl, n*.log, storage.log, history.json, rejections.json (and report.json,
timeline.png written by the report).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import secrets
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from elector import cluster as cluster_file
from fencekeeper.lab.nemesis import DRIFT_RATE, Nemesis, cycles
from fencekeeper.lab.netns import Netns
from fencekeeper.lab.network import Network, ProxyNetwork
from fencekeeper.lab.proxy import Link, ProxySet
from fencekeeper.pgtemp import PgTemp, postgres_can_reach
from fencekeeper.processes import NodeProcess, StorageProcess, free_base_port, node_command
from storage_service.client import StorageClient

FIRST_LEADER_S = 30.0


@dataclass
class LabConfig:
    """What `fencekeeper lab run` was asked for (saved as run.json, so a report can be re-rendered)."""

    scenario: str
    out: str
    nodes: int = 3
    duration: float = 20.0
    seed: int = 0
    fencing: bool = True
    db: str | None = None
    net: str = "proxy"
    lease_ms: int = 1000
    nemesis_every: float | None = None
    clock_rate: dict[str, float] = field(default_factory=dict)  # node -> rate; clock-drift's default if empty


def _write_cluster(base: cluster_file.Cluster, path: Path, addresses: dict[str, str]) -> None:
    """A copy of the cluster file with other addresses (same id, keys and timing)."""
    t = base.timing
    lines = [
        f"cluster = {json.dumps(base.id)}",
        "",
        "[timing]",
        f"lease_ms = {t.lease_ms}",
        f"renew_ms = {t.renew_ms}",
        f"request_timeout_ms = {t.request_timeout_ms}",
        f"max_drift = {t.max_drift}",
        f"margin_ms = {t.margin_ms}",
    ]
    for m in base.members:
        lines += [
            "",
            "[[members]]",
            f"id = {json.dumps(m.id)}",
            f"address = {json.dumps(addresses[m.id])}",
            f"public_key = {json.dumps(m.public_key)}",
            f"key_file = {json.dumps(m.key_file or '')}",
        ]
    path.write_text("\n".join(lines) + "\n")


class Lab:
    """One run's processes and proxies, and what scenarios need to look at them."""

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.out = Path(config.out).absolute()
        self.rng = random.Random(config.seed)
        self.group = "orders" if config.db in (None, "pg-temp") else f"orders-{secrets.token_hex(3)}"
        self.lease_ms = config.lease_ms
        self.lease_s = config.lease_ms / 1000
        self.nemesis_every = config.nemesis_every
        self.node_ids = [f"n{i}" for i in range(1, config.nodes + 1)]
        self.cycles = cycles(config.scenario, config.nodes, config.net)  # ValueError when it cannot run
        drift = {self.node_ids[0]: DRIFT_RATE} if "clock-drift" in config.scenario.split("+") else {}
        self.clock_rates = {n: (config.clock_rate or drift).get(n, 1.0) for n in self.node_ids}
        self.proxies = ProxySet(seed=config.seed)
        self.peer_links: dict[tuple[str, str], Link] = {}
        self.storage_links: dict[str, Link] = {}  # empty with --net netns
        self.net: Network = ProxyNetwork(self.peer_links, self.proxies.links)
        self.pg: PgTemp | None = None
        self.nodes: dict[str, NodeProcess] = {}
        self.storage: StorageProcess
        self.nemesis = Nemesis(self, self.out / "nemesis.jsonl")
        self.real: dict[str, str] = {}
        self.started = 0.0
        self.ends_at = 0.0
        self.leader: tuple[str, int] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- time ---------------------------------------------------------------------------------------------

    def time_left(self) -> float:
        return self.ends_at - time.monotonic()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, but not past the end of the run; False once the run's time is spent."""
        await asyncio.sleep(max(0.0, min(seconds, self.time_left())))
        return self.time_left() > 0

    # -- looking at the nodes (directly, not through the proxies) -----------------------------------------

    async def views(self) -> dict[str, dict[str, Any]]:
        assert self._session is not None

        async def ask(node: str) -> dict[str, Any] | None:
            assert self._session is not None
            try:
                url = f"http://{self.real[node]}/v1/groups/{self.group}/leader"
                async with self._session.get(url) as resp:
                    return await resp.json() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None

        answers = await asyncio.gather(*(ask(n) for n in self.node_ids))
        return {n: a for n, a in zip(self.node_ids, answers, strict=True) if a is not None}

    async def release(self, node: str) -> None:
        """Ask `node` to hand its lease over (it campaigns again a lease later)."""
        assert self._session is not None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._session.post(f"http://{self.real[node]}/v1/groups/{self.group}/release"):
                pass

    async def wait_leader(self, above: int = 0) -> tuple[str, int] | None:
        """The node that says it leads (highest epoch), or None if the run ends first."""
        while self.time_left() > 0:
            leaders = [(v["epoch"], n) for n, v in (await self.views()).items() if v["role"] == "leader"]
            leaders = [(e, n) for e, n in leaders if e > above]
            if leaders:
                epoch, node = max(leaders)
                self.leader = (node, epoch)
                return node, epoch
            await asyncio.sleep(0.05)
        return None

    # -- setting up ---------------------------------------------------------------------------------------

    def listen_ports(self) -> tuple[int, dict[str, int]]:
        """The storage's port and each node's, all below the kernel's ephemeral range.

        Why: the proxies listen on port 0 and open outbound connections, both of which take ephemeral
        ports; a node or storage port picked from that range can be taken by one of them before the
        process binds it (or rebinds it after a restart). A node whose port a proxy holds is answered for
        by another node, whose grants then carry the wrong voter's name.
        """
        base = free_base_port(len(self.node_ids) + 1)
        return base, {n: base + i for i, n in enumerate(self.node_ids, start=1)}

    async def _setup(self, db_url: str, netns: Netns | None) -> None:
        """Cluster files, storage and nodes; with `netns`, nodes in their namespaces, else behind proxies."""
        cfg = self.config
        cluster_dir = self.out / "cluster"
        base = cluster_file.init(cluster_dir, cfg.nodes, timing=cluster_file.Timing.for_lease(cfg.lease_ms))
        storage_port, ports = self.listen_ports()
        self.real = {n: f"{netns.ips[n] if netns else '127.0.0.1'}:{ports[n]}" for n in self.node_ids}
        self.storage = StorageProcess(
            db_url,
            self.out / "storage.log",
            host=netns.host_ip if netns else "127.0.0.1",
            port=storage_port,
            fencing=cfg.fencing,
            extra_args=("--token-verify", "quorum", "--cluster", str(cluster_dir / "cluster.toml")),
        )
        if netns is None:
            for a in self.node_ids:
                self.storage_links[a] = await self.proxies.add(f"{a}->storage", ("127.0.0.1", storage_port))
                for b in self.node_ids:
                    if a != b:
                        target = ("127.0.0.1", ports[b])
                        self.peer_links[(a, b)] = await self.proxies.add(f"{a}->{b}", target)
        else:
            self.net = netns
        for n in self.node_ids:
            if netns is None:
                addresses = {m: self.peer_links[(n, m)].address for m in self.node_ids if m != n}
                storage_url, prefix = f"http://{self.storage_links[n].address}", []
            else:
                addresses, storage_url, prefix = {}, self.storage.url, netns.exec_prefix(n)
            path = cluster_dir / f"cluster-{n}.toml"
            _write_cluster(base, path, self.real | addresses)
            args = [
                *prefix,
                *node_command(path, n, self.out / f"data-{n}", self.group, "--storage", storage_url),
                *("--log-file", str(self.out / f"{n}.log")),
            ]
            if self.clock_rates[n] != 1.0:
                args += ["--clock-rate", str(self.clock_rates[n])]
            self.nodes[n] = NodeProcess(
                n, args, f"http://{self.real[n]}", self.out / f"{n}.log", self.out / f"{n}.err"
            )
        for node in self.nodes.values():  # the storage starts meanwhile: nodes retry until it serves
            node.spawn()
        await asyncio.gather(self.storage.start(), *(node.wait_serving() for node in self.nodes.values()))

    def _stop_nodes(self) -> None:
        """SIGTERM every node at once (each hands over gracefully), SIGKILL whatever is left after 5 s."""
        for node in self.nodes.values():
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for node in self.nodes.values():
            node.stop(timeout=max(0.1, deadline - time.monotonic()))

    async def _collect(self) -> None:
        """The storage's accepted history (with values) and its rejections, saved beside the logs."""
        async with StorageClient(self.storage.url, timeout=30) as client:
            history = await client.history(self.group, values=True)
            rejections = await client.rejections(self.group)
        (self.out / "history.json").write_text(json.dumps(history))
        (self.out / "rejections.json").write_text(json.dumps(rejections))

    async def run(self, on_tick: Any = None) -> None:
        """Set up, run the scenario's cycles for `duration` seconds, settle, stop everything, collect."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in ("nemesis.jsonl", "history.json", "rejections.json", "storage.log"):
            (self.out / stale).unlink(missing_ok=True)
        for n in self.node_ids:
            (self.out / f"{n}.log").unlink(missing_ok=True)
        meta: dict[str, Any] = {"config": asdict(cfg), "group": self.group, "nodes": self.node_ids,
                                "clock_rates": self.clock_rates}  # fmt: skip
        with contextlib.ExitStack() as stack:  # closed last: after the finally below stopped every process
            db_url = cfg.db or f"sqlite+aiosqlite:///{self.out / 'storage.db'}"
            if cfg.db is None:
                for suffix in ("", "-wal", "-shm"):
                    (self.out / f"storage.db{suffix}").unlink(missing_ok=True)
            if cfg.db == "pg-temp":
                # In the run folder, as evidence, where PostgreSQL can reach it (as root it runs as
                # `postgres`, which cannot enter a 0700 folder such as pytest's): else a temp dir.
                pg_dir = self.out / "postgres"
                shutil.rmtree(pg_dir, ignore_errors=True)  # a previous run's cluster: start afresh
                data_dir = pg_dir if postgres_can_reach(pg_dir) else None
                self.pg = stack.enter_context(PgTemp(data_dir, port=free_base_port(1)))  # restarts rebind it
                meta["postgres_data"] = str(self.pg.data_dir)
                db_url = self.pg.url
            netns = stack.enter_context(Netns(self.node_ids)) if cfg.net == "netns" else None
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5))
            ticker: asyncio.Task[None] | None = None
            try:
                await self._setup(db_url, netns)
                # The run's time starts with a first leader: a scenario's duration is all fault time,
                # however long the first election takes on a busy machine.
                self.ends_at = time.monotonic() + FIRST_LEADER_S
                if await self.wait_leader() is None:
                    raise RuntimeError(f"no node led within {FIRST_LEADER_S:.0f} s of starting")
                meta["started"] = time.time()
                self.nemesis.log("run-start", "all")
                self.started = time.monotonic()
                self.ends_at = self.started + cfg.duration
                if on_tick is not None:
                    ticker = asyncio.create_task(self._tick(on_tick))
                for cycle in itertools.cycle(self.cycles):
                    if self.time_left() <= 0:
                        break
                    await cycle(self, self.nemesis)
                self.ends_at = time.monotonic() + 2 * self.lease_s  # settle: heal, wake, let a leader write
                for fault in list(self.nemesis.open):
                    self.nemesis.end(fault, "heal")
                self.net.heal()
                for n, node in self.nodes.items():
                    if not node.alive():
                        node.spawn()
                        self.nemesis.log("restart", n)
                    node.signal(signal.SIGCONT)  # nothing stays paused
                await self.wait_leader()
                await self.sleep(self.lease_s / 2)
                self.nemesis.log("run-end", "all")
                meta["ended"] = time.time()
                self._stop_nodes()
                await self._collect()
            finally:
                if ticker is not None:
                    ticker.cancel()
                meta.setdefault("ended", time.time())
                self._stop_nodes()
                if hasattr(self, "storage"):
                    self.storage.stop()
                await self.proxies.close()
                await self._session.close()
                (self.out / "run.json").write_text(json.dumps(meta, indent=2))

    async def _tick(self, on_tick: Any) -> None:
        while True:
            on_tick(self)
            await asyncio.sleep(0.25)
