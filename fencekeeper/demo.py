"""`fencekeeper demo`: the two classic split brains, each run with fencing on and with fencing off.

Why both arms: a fence that refuses nothing proves nothing. The same fault, on the same real processes,
run once with the storage checking tokens and once without, shows the damage (a counter update lost, a
write accepted out of epoch order) and that the fence is what prevents it.

Each scenario's two arms run side by side (two partition labs at once: a storage service on SQLite and
three elector nodes each, every link through the lab's proxy), the scenarios one after the other; the
run directories stay in `--out` with their logs, report.json and timeline.png.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console

from fencekeeper.lab.report import print_summary, render
from fencekeeper.lab.runner import Lab, LabConfig

# Seconds of faults: one cycle each (both scenarios make the old leader's write land after the new fence).
SCENARIOS = {"leader-pause": 5.0, "leader-partition": 5.0}
SHOWN_LOG_LINES = 2  # per scenario: enough to see what a refusal looks like in the log


def _run_dir(out: Path, scenario: str, fencing: bool) -> Path:
    return out / f"{scenario}-fencing-{'on' if fencing else 'off'}"


async def run_demo(out: Path, lease_ms: int = 800, seed: int = 1) -> int:
    """Run both scenarios with both arms; print the verdicts. Exit 1 if fencing on let anything unsafe in."""
    console = Console()
    console.print(
        f"[bold]fencekeeper demo[/]: 3 elector nodes + a fenced storage service (SQLite), "
        f"lease {lease_ms} ms; each scenario runs with fencing on and off side by side.\n"
    )
    for scenario, duration in SCENARIOS.items():
        labs = [
            Lab(
                LabConfig(
                    scenario,
                    str(_run_dir(out, scenario, fencing)),
                    duration=duration,
                    seed=seed,
                    fencing=fencing,
                    lease_ms=lease_ms,
                )
            )
            for fencing in (True, False)
        ]
        with console.status(f"{scenario}: {_describe(scenario)}"):
            await asyncio.gather(*(lab.run() for lab in labs))
        console.print(f"[green]done[/] {scenario}")
    reports = [render(_run_dir(out, s, f)) for s in SCENARIOS for f in (True, False)]
    console.print()
    print_summary(reports, console, timelines=False)
    _print_refusals(console, out)
    return _verdict(console, reports)


def _describe(scenario: str) -> str:
    if scenario == "leader-pause":
        return "SIGSTOP the leader past its lease, then SIGCONT (a GC or VM stall)"
    return "cut the leader from its peers while its writes to the storage are slow (a network split)"


def _print_refusals(console: Console, out: Path) -> None:
    console.print(
        "\n[bold]Refused stale writes, as the storage logged them[/] (JSON lines, event write_rejected):"
    )
    for scenario in SCENARIOS:
        log = _run_dir(out, scenario, True) / "storage.log"
        lines = [line for line in log.read_text().splitlines() if '"write_rejected"' in line]
        for line in lines[:SHOWN_LOG_LINES]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if len(lines) > SHOWN_LOG_LINES:
            console.print(f"  ... {len(lines) - SHOWN_LOG_LINES} more in {log}")
        if not lines:
            console.print(f"  {scenario}: none (the old leader noticed its lost lease before writing again)")


def _verdict(console: Console, reports: list[dict[str, Any]]) -> int:
    console.print("\n[bold]Verdict[/]")
    status = 0
    for on, off in zip(reports[::2], reports[1::2], strict=True):
        scenario = on["scenario"]
        if on["safe"]:
            line = (
                f"[green]{scenario}, fencing on: safe[/]: {on['stale_writes_rejected']} stale write(s) "
                f"refused ({on['stale_writes_logged']} logged), 0 unsafe writes, 0 lost updates."
            )
        else:
            status = 1
            line = (
                f"[bold red]{scenario}, fencing on: UNSAFE[/]: {on['unsafe_writes']} unsafe writes, "
                f"{on['lost_updates']} lost updates, {len(on['stale_writes_unlogged'])} refusals not logged."
            )
        console.print(line)
        if off["safe"]:
            console.print(
                f"[yellow]{scenario}, fencing off: no damage this time[/] (the old leader noticed its lost "
                "lease before its next write); run the demo again to see the race."
            )
        else:
            console.print(
                f"[red]{scenario}, fencing off: damaged[/]: {off['unsafe_writes']} write(s) accepted out of "
                f"epoch order, {off['lost_updates']} lost update(s) — the old leader overwrote the new one."
            )
    console.print("\n[bold]Timelines[/] (one lane per node; red shade = fault, X = refused stale write):")
    for r in reports:
        console.print(f"  {r['timeline']}", highlight=False)
    return status
