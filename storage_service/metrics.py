"""Prometheus metrics, one registry per app so that several apps can live in one process (tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class StorageMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "fencekeeper_storage_writes_accepted",
            "Writes accepted (each object of a batch counts once)",
            ["op"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "fencekeeper_storage_writes_rejected",
            "Writes refused by the fence, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.fence_epoch = Gauge(
            "fencekeeper_storage_fence_epoch",
            "Highest epoch seen by this process for the namespace's fence",
            ["namespace"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fencekeeper_storage_request_seconds",
            "Request latency by route and status",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

        self._epochs: dict[str, int] = {}

    def saw_epoch(self, namespace: str, epoch: int) -> None:
        if epoch > self._epochs.get(namespace, -1):
            self._epochs[namespace] = epoch
            self.fence_epoch.labels(namespace).set(epoch)
