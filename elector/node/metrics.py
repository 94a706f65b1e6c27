"""Prometheus metrics of one node (its own registry, so that tests can run several nodes in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.elections = Counter(
            "fencekeeper_node_elections", "Times this node became leader", ["group"], registry=self.registry
        )
        self.campaigns = Counter(
            "fencekeeper_node_campaigns", "Campaigns this node started", ["group"], registry=self.registry
        )
        self.epoch = Gauge(
            "fencekeeper_node_epoch", "Epoch this node last led", ["group"], registry=self.registry
        )
        self.is_leader = Gauge(
            "fencekeeper_node_is_leader",
            "1 while this node leads the group",
            ["group"],
            registry=self.registry,
        )
        self.renew_latency = Histogram(
            "fencekeeper_node_renew_seconds",
            "From sending a renewal to a majority's answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
            registry=self.registry,
        )
        self.peer_errors = Counter(
            "fencekeeper_node_peer_errors",
            "Requests to a peer that failed or timed out",
            ["peer"],
            registry=self.registry,
        )

    def became_leader(self, group: str, epoch: int) -> None:
        self.elections.labels(group).inc()
        self.epoch.labels(group).set(epoch)
        self.is_leader.labels(group).set(1)

    def stepped_down(self, group: str) -> None:
        self.is_leader.labels(group).set(0)
