"""`--net netns`: each node in its own network namespace on one bridge, partitions made with iptables.

Why: the proxy partitions the lab's own TCP links; here the kernel drops the packets, as a real network
would, so the nodes' HTTP clients see what they would see in production (connections that hang until
their timeout, not resets). Linux and root only (CAP_NET_ADMIN), `ip` (iproute2) and `iptables`.

Layout: a bridge in the root namespace holds the host address (`.1`, where the storage listens); node
`nK` runs in namespace `fk<tag>-nK` behind a veth pair, at `.10+K`. A fault is a set of DROP rules in the
namespaces of the nodes it concerns; healing flushes them. Everything is named after a per-run tag and is
removed by `close()` (namespaces, with their veth ends and rules, the bridge, a FORWARD rule if one was
needed), also after a failure or Ctrl-C, since the runner closes it in a `finally`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from types import TracebackType

_SUBNET_PREFIX = "10.213"


class NetnsError(RuntimeError):
    """The namespaces cannot be used here; the message is one plain line naming what failed."""


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise NetnsError(f"`{' '.join(args)}` failed: {exc.strerror}") from None
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()
        raise NetnsError(f"`{' '.join(args)}` failed: {why[-1] if why else f'exit {result.returncode}'}")
    return result


def unavailable() -> str | None:
    """Why `--net netns` cannot run here (one line), or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "--net netns needs root (network namespaces, veth pairs and iptables rules)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("iptables-restore", "iptables")):
        if shutil.which(tool) is None:
            return f"--net netns needs `{tool}` (apt-get install {package})"
    probe = f"fk{secrets.token_hex(3)}-probe"
    try:
        _run("ip", "netns", "add", probe)
    except NetnsError as exc:
        return f"--net netns cannot create a network namespace here: {exc}"
    try:
        _run("ip", "netns", "exec", probe, "iptables", "-S")
    except NetnsError as exc:
        return f"--net netns cannot use iptables inside a namespace: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def drop_rules(cuts: Sequence[tuple[str, str]], ips: dict[str, str]) -> dict[str, list[str]]:
    """The iptables rules, per node, that lose every packet `src` sends to `dst` for each (src, dst).

    Both ends get a rule (OUTPUT at the sender, INPUT at the receiver), so a one-way loss holds even for
    packets already queued on the bridge.
    """
    rules: dict[str, list[str]] = defaultdict(list)
    for src, dst in cuts:
        rules[src].append(f"-A OUTPUT -d {ips[dst]} -j DROP")
        rules[dst].append(f"-A INPUT -s {ips[src]} -j DROP")
    return dict(rules)


class Netns:
    """The namespaces, veth pairs and bridge of one lab run; a `Network` for the nemesis."""

    def __init__(self, node_ids: Sequence[str], tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(2)
        self.node_ids = list(node_ids)
        self.bridge = f"fk{self.tag}br"
        self.namespaces = {n: f"fk{self.tag}-{n}" for n in self.node_ids}
        self.subnet = f"{_SUBNET_PREFIX}.{int(self.tag, 16) % 250 + 1}"
        self.host_ip = f"{self.subnet}.1"
        self.ips = {n: f"{self.subnet}.{10 + i}" for i, n in enumerate(self.node_ids, start=1)}
        self._created: list[tuple[str, ...]] = []  # undo commands, run in reverse by close()
        self._dirty: set[str] = set()  # namespaces holding fault rules

    def exec_prefix(self, node: str) -> list[str]:
        """The command prefix that runs a program inside `node`'s namespace (it execs: same pid)."""
        return ["ip", "netns", "exec", self.namespaces[node]]

    def setup(self) -> None:
        """Create the bridge, and per node a namespace, a veth pair and its address. Undone by close()."""
        if self.subnet + "." in _run("ip", "-o", "-4", "addr").stdout:
            raise NetnsError(f"the subnet {self.subnet}.0/24 is already in use; run again (another tag)")
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._created.append(("ip", "link", "del", self.bridge))
        _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        if self._bridge_filtered():
            # br_netfilter sends bridged packets through the root FORWARD chain (DROP under Docker).
            rule = ("FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
            _run("iptables", "-I", *rule)
            self._created.append(("iptables", "-D", *rule))
        for n in self.node_ids:
            ns, veth = self.namespaces[n], f"fk{self.tag}{n}"
            _run("ip", "netns", "add", ns)
            self._created.append(("ip", "netns", "del", ns))
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._created.append(("ip", "link", "del", veth))  # gone with the namespace; harmless then
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ips[n]}/24", "dev", "eth0")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    @staticmethod
    def _bridge_filtered() -> bool:
        try:
            with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as flag:
                return flag.read().strip() == "1"
        except OSError:
            return False

    # -- the Network interface ----------------------------------------------------------------------------

    def cut(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._apply([(a, b) for a, b in pairs] + [(b, a) for a, b in pairs])

    def drop(self, src: str, dsts: Sequence[str]) -> None:
        self._apply([(src, dst) for dst in dsts])

    def heal(self) -> None:
        for n in sorted(self._dirty):
            _run("ip", "netns", "exec", self.namespaces[n], "iptables", "-F")
        self._dirty.clear()

    def _apply(self, cuts: Sequence[tuple[str, str]]) -> None:
        """One iptables-restore per namespace (rules added, none flushed): a fault starts at once."""
        for node, rules in drop_rules(cuts, self.ips).items():
            script = "*filter\n" + "\n".join(rules) + "\nCOMMIT\n"
            ns = self.namespaces[node]
            _run("ip", "netns", "exec", ns, "iptables-restore", "--noflush", stdin=script)
            self._dirty.add(node)

    # -- teardown -----------------------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Remove everything setup() created, newest first; returns what could not be removed."""
        failed = []
        while self._created:
            undo = self._created.pop()
            result = subprocess.run(undo, capture_output=True, text=True, check=False)
            gone = "Cannot find device" in result.stderr or "No such file" in result.stderr
            if result.returncode != 0 and not gone:
                failed.append(f"`{' '.join(undo)}`: {result.stderr.strip()}")
        return failed

    def __enter__(self) -> Netns:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        failed = self.close()
        if failed and exc is None:
            raise NetnsError("could not remove: " + "; ".join(failed))
