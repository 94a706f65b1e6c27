"""The figures of bench/peers as one table: statistics, the rich and Markdown renderings, and the section of
docs/benchmarks.md the run rewrites. Pure, so the tests need no etcd or ZooKeeper."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.table import Table

from bench.failover import percentile

FENCEKEEPER, ETCD, ZOOKEEPER = "fencekeeper", "etcd 3.4", "ZooKeeper 3.8"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
HEADING = "## Against etcd and ZooKeeper (`bench/peers/`)"


@dataclass(frozen=True)
class Stat:
    """Failover times of one arm, in ms; `failed` trials saw no new leader write within the deadline."""

    trials: int
    failed: int
    min: float | None
    median: float | None
    p99: float | None

    @classmethod
    def of(cls, samples: Sequence[float | None]) -> Stat:
        got = [s for s in samples if s is not None]
        if not got:
            return cls(len(samples), len(samples), None, None, None)
        return cls(
            len(samples), len(samples) - len(got), min(got), statistics.median(got), percentile(got, 99)
        )

    def text(self) -> str:
        if self.median is None:
            return f"all {self.trials} failed"
        failed = f" ({self.failed} failed)" if self.failed else ""
        return f"{self.min:.0f} / {self.median:.0f} / {self.p99:.0f}{failed}"


@dataclass(frozen=True)
class Rate:
    """Accepted writes per second of one arm, and their latency."""

    writes_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int = 0

    def text(self) -> str:
        errors = f", {self.errors} errors" if self.errors else ""
        return (
            f"{self.writes_per_s:,.0f}/s (p50 {self.p50_ms or 0:.1f}, p99 {self.p99_ms or 0:.0f} ms{errors})"
        )


Figure = Stat | Rate


@dataclass(frozen=True)
class Row:
    """One measure across the systems. `against`: the peer figures the ratio compares with when the row
    has none of its own (fencekeeper at a lease the peers cannot go down to, against their 2 s)."""

    measure: str
    cells: dict[str, Figure]
    against: dict[str, Figure] = field(default_factory=dict)


def ratio(ours: Figure | None, theirs: Figure | None) -> str:
    """fencekeeper / peer: of the medians and of the p99s for times (below 1: fencekeeper is faster), of
    the rates for throughput (above 1: fencekeeper writes more)."""
    if isinstance(ours, Stat) and isinstance(theirs, Stat):
        if ours.median is None or theirs.median is None or ours.p99 is None or theirs.p99 is None:
            return "–"
        return f"{ours.median / theirs.median:.2f} / {ours.p99 / theirs.p99:.2f}"
    if isinstance(ours, Rate) and isinstance(theirs, Rate) and theirs.writes_per_s:
        return f"{ours.writes_per_s / theirs.writes_per_s:.2f}"
    return "–"


def cells(rows: Sequence[Row], peers: Sequence[str]) -> list[list[str]]:
    """The table as text, header first: the measure, each system's figure, then fencekeeper / each peer."""
    header = ["measure", FENCEKEEPER, *peers, *(f"{FENCEKEEPER} / {peer}" for peer in peers)]
    out = [header]
    for row in rows:
        ours = row.cells.get(FENCEKEEPER)
        figures = [row.cells[s].text() if s in row.cells else "–" for s in (FENCEKEEPER, *peers)]
        ratios = []
        for peer in peers:
            if peer in row.cells:
                ratios.append(ratio(ours, row.cells[peer]))
            elif peer in row.against:
                ratios.append(f"{ratio(ours, row.against[peer])} (vs 2 s)")
            else:
                ratios.append("–")
        out.append([row.measure, *figures, *ratios])
    return out


def markdown(rows: Sequence[Row], peers: Sequence[str]) -> str:
    header, *body = cells(rows, peers)
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines)


def rich_table(rows: Sequence[Row], peers: Sequence[str], title: str) -> Table:
    header, *body = cells(rows, peers)
    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for line in body:
        table.add_row(*line)
    return table


def replace_section(text: str, body: str) -> str:
    """`text` with what stands between the markers replaced by `body`; without the markers, a new section
    (heading and markers) at the end. Everything outside the markers is left as it was."""
    block = f"{BEGIN}\n{body.strip()}\n{END}"
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(END) :]
    return text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
