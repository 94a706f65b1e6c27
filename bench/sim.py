"""Simulator throughput: seeded runs per second and protocol events per second on one core.

Side by side in one process: the full search (every invariant checked as the run goes) and the same
seeds with the checks detached, so the ratio is what checking costs. Figures are per CPU-second of this
process (time.process_time), which other load on the machine disturbs far less than wall time.

    .venv/bin/python bench/sim.py [--runs 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from elector.sim import SimConfig, run_seed


def measure(first: int, runs: int, config: SimConfig) -> tuple[float, int, int]:
    cpu = time.process_time()
    events = faults = 0
    for seed in range(first, first + runs):
        result = run_seed(seed, config)
        assert result.violation is None, result.violation
        events += result.events
        faults += result.faults
    return time.process_time() - cpu, events, faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for label, config in (
        ("checked (what CI runs)", SimConfig()),
        ("baseline: checks off", SimConfig(check=False)),
    ):
        cpu, events, faults = measure(args.seed, args.runs, config)
        rows.append((label, args.runs / cpu, events / cpu, faults / cpu, events))
    table = Table(title=f"fencekeeper sim, {args.runs} seeds from {args.seed}, per CPU-second of one core")
    for column in ("arm", "runs/s", "events/s", "faults/s", "events"):
        table.add_column(column)
    for label, runs_s, events_s, faults_s, events in rows:
        table.add_row(label, f"{runs_s:.1f}", f"{events_s:,.0f}", f"{faults_s:,.0f}", f"{events:,}")
    console = Console()
    console.print(table)
    ratio = rows[0][2] / rows[1][2]
    console.print(f"checked / unchecked events per second: {ratio:.2f}x; goal >= 100,000 events/s checked")
    print("\n| arm | runs/s | events/s | faults/s |\n| --- | --- | --- | --- |")
    for label, runs_s, events_s, faults_s, _ in rows:
        print(f"| {label} | {runs_s:.1f} | {events_s:,.0f} | {faults_s:,.0f} |")
    print(f"\nratio checked/unchecked: {ratio:.2f}")


if __name__ == "__main__":
    main()
