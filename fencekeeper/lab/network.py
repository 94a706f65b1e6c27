"""How the nemesis partitions nodes: one interface, two networks.

Why an interface: the scenarios say *what* to cut (a pair of nodes both ways, or one node's traffic to
some peers); `--net proxy` does it on the lab's own TCP proxy links (no root), `--net netns` with iptables
rules inside each node's network namespace (`fencekeeper/lab/netns.py`). Faults that delay or hold bytes
in flight (`slow_storage`, `hold_storage`) exist only on the proxy: the kernel here has no netem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from fencekeeper.lab.proxy import Link


class Network(Protocol):
    """Partitions between nodes. The storage stays reachable from every node."""

    def cut(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Nothing passes between a and b, either way, for each (a, b)."""

    def drop(self, src: str, dsts: Sequence[str]) -> None:
        """Everything `src` sends to each of `dsts` is lost (its requests, and its answers to theirs)."""

    def heal(self) -> None:
        """Every partition (and, on the proxy, every other fault) ends now."""


class ProxyNetwork:
    """The partitions on the proxy's links: `links[(a, b)]` carries a's requests to b."""

    def __init__(self, links: Mapping[tuple[str, str], Link], all_links: Mapping[str, Link]) -> None:
        self.links = links
        self.all_links = all_links

    def cut(self, pairs: Sequence[tuple[str, str]]) -> None:
        for a, b in pairs:
            self.links[(a, b)].cut()
            self.links[(b, a)].cut()

    def drop(self, src: str, dsts: Sequence[str]) -> None:
        for dst in dsts:
            self.links[(src, dst)].set("up", blackhole=True)
            self.links[(dst, src)].set("down", blackhole=True)

    def heal(self) -> None:
        for link in self.all_links.values():
            link.heal()
