"""A run's report: report.json, a rich summary table and timeline.png (one lane per node).

Why a picture: a split brain or a late write is a question of *when*; the timeline puts each node's
believed leadership, the nemesis's faults and the storage's accepted and refused writes on one time axis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fencekeeper.lab import checker
from fencekeeper.lab.checker import RunData

STATS = ("min", "median", "p99")
EPOCH_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def render(run_dir: str | Path) -> dict[str, Any]:
    """Check a finished run and write report.json and timeline.png into its directory."""
    run = Path(run_dir)
    data = checker.load(run)
    report = checker.check(data)
    report["timeline"] = str(run / "timeline.png")
    (run / "report.json").write_text(json.dumps(report, indent=2))
    timeline(data, run / "timeline.png")
    return report


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def table(reports: list[dict[str, Any]]) -> Table:
    """One column per run, side by side (fencing on next to fencing off reads best)."""
    t = Table(title="partition lab", show_lines=False)
    t.add_column("")
    for r in reports:
        t.add_column(f"{r['scenario']}\nfencing {'on' if r['fencing'] else 'off'}", justify="right")
    rows: list[tuple[str, Any]] = [
        ("nodes / duration", lambda r: f"{r['nodes']} / {_fmt(r['duration_s'])} s"),
        ("faults injected", lambda r: len(r["faults"])),
        ("failover ms min/med/p99", lambda r: "/".join(_fmt(r["failover_time_ms"][k]) for k in STATS)),
        ("elections", lambda r: r["election_count"]),
        ("split-brain windows (ms)", lambda r: f"{r['split_brain_events']} ({r['split_brain_ms']})"),
        ("write availability %", lambda r: r["write_availability_pct"]),
        ("accepted writes", lambda r: r["accepted_writes"]),
        ("stale writes rejected", lambda r: r["stale_writes_rejected"]),
        ("  of which logged", lambda r: r["stale_writes_logged"]),
        ("unsafe writes", lambda r: _mark(r["unsafe_writes"])),
        ("lost updates", lambda r: _mark(r["lost_updates"])),
        ("verdict", lambda r: "[bold green]SAFE[/]" if r["safe"] else "[bold red]DAMAGED[/]"),
    ]  # fmt: skip
    for label, get in rows:
        t.add_row(label, *(str(get(r)) for r in reports))
    return t


def _mark(count: int) -> str:
    return f"[bold red]{count}[/]" if count else "[green]0[/]"


def print_summary(
    reports: list[dict[str, Any]], console: Console | None = None, *, timelines: bool = True
) -> None:
    console = console or Console()
    console.print(table(reports))
    for r in reports:
        for u in r["unsafe"][:3]:
            console.print(
                f"  [red]unsafe[/] seq {u['seq']} {u['writer']} epoch {u['epoch']}: {'; '.join(u['why'])}"
            )
        for lost in r["lost"][:3]:
            console.print(
                f"  [red]lost update[/] seq {lost['seq']} {lost['writer']} epoch {lost['epoch']}: "
                f"value {lost['value']}, expected {lost['expected']} ({lost['kind']})"
            )
        if timelines:
            console.print(f"  timeline: {r['timeline']}")


def timeline(data: RunData, path: Path) -> None:
    """Lanes per node: leadership bars coloured by epoch; faults shaded; writes as ticks, refusals as X."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = list(data.node_logs)
    t0 = data.start or min((checker.ts(w["at"]) for w in data.history), default=0.0)
    lane = {n: i for i, n in enumerate(nodes)}
    height = max(3.0, 0.9 * len(nodes) + 1.8)
    fig, ax = plt.subplots(figsize=(13, height), dpi=110)

    starts = {e["fault"]: e for e in data.nemesis if e.get("phase") == "start"}
    ends = {e["fault"]: e for e in data.nemesis if e.get("phase") == "end"}
    placed: list[float] = []
    for fid, s in starts.items():
        a = checker.ts(s["at"]) - t0
        b = checker.ts(ends[fid]["at"]) - t0 if fid in ends else (data.end - t0)
        ax.axvspan(a, b, color="#d62728", alpha=0.10, lw=0)
        stacked = sum(1 for x in placed if abs(x - a) < 1.0)  # faults started together: one label per line
        placed.append(a)
        label = f"{s['action']} {s['target']}"
        ax.text(a, len(nodes) - 0.35 - 0.2 * stacked, label, fontsize=7, color="#a01010", va="bottom")

    for iv in checker.leadership_intervals(data):
        y = lane[iv["node"]]
        color = EPOCH_COLORS[iv["epoch"] % len(EPOCH_COLORS)]
        ax.barh(y, iv["end"] - iv["start"], left=iv["start"] - t0, height=0.5, color=color, alpha=0.55)
        ax.text(max(0.0, iv["start"] - t0), y + 0.28, f"e{iv['epoch']}", fontsize=7, va="bottom")

    for w in data.history:
        if w.get("writer") in lane:
            ax.plot(checker.ts(w["at"]) - t0, lane[w["writer"]] - 0.32, "|", color="#333333", ms=5, alpha=0.6)
    bad = {u["seq"] for u in checker.unsafe_writes(data)} | {u["seq"] for u in checker.lost_updates(data)}
    for w in data.history:
        if w.get("seq") in bad and w.get("writer") in lane:
            ax.plot(checker.ts(w["at"]) - t0, lane[w["writer"]] - 0.32, "v", color="#d62728", ms=8)
    for r in data.rejections:
        if r.get("writer") in lane:
            ax.plot(
                checker.ts(r["at"]) - t0, lane[r["writer"]], "X", color="#d62728", ms=9, mec="black", mew=0.5
            )

    ax.set_yticks(range(len(nodes)), nodes)
    ax.set_ylim(-0.7, len(nodes) - 0.1)
    ax.set_xlim(left=0, right=max(1.0, (data.end or t0 + 1) - t0))
    ax.set_xlabel("seconds since the run started")
    config = data.meta.get("config", {})
    ax.set_title(
        f"{config.get('scenario')} | fencing {'on' if config.get('fencing', True) else 'off'} | "
        "bars: believed leadership (label = epoch) | red shade: fault | ticks: accepted writes | "
        "X: refused stale write | red v: unsafe/lost write",
        fontsize=8,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
