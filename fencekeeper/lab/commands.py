"""`fencekeeper lab run SCENARIO ...` and `fencekeeper lab report DIR`."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from fencekeeper.cli import CliError


def add_parser(commands: Any) -> None:
    """Register `lab` on the top-level subcommands."""
    from fencekeeper.lab.nemesis import SCENARIOS

    lab = commands.add_parser("lab", help="the partition lab: real nodes behind fault-injecting proxies")
    sub = lab.add_subparsers(dest="lab_command", required=True)
    run = sub.add_parser("run", help="run one scenario and check what the storage accepted")
    run.add_argument(
        "scenario",
        help=f"one of {', '.join(sorted(SCENARIOS))}; several joined by + run in turn (halves+flapping)",
    )
    run.add_argument("--nodes", type=int, choices=[3, 5], default=3)
    run.add_argument("--duration", type=float, default=20.0, help="seconds of faults (default 20)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--fencing", choices=["on", "off"], default="on", help="off: the control arm")
    run.add_argument("--db", help="database URL, or pg-temp for a throwaway PostgreSQL (default: SQLite)")
    run.add_argument(
        "--net",
        choices=["proxy", "netns"],
        default="proxy",
        help="proxy: the lab's TCP proxy (default); netns: a network namespace per node, iptables (root)",
    )
    run.add_argument("--out", help="run directory (default lab-runs/SCENARIO-fencing-TIME)")
    run.add_argument("--lease-ms", type=int, default=1000, help="lease length (default 1000)")
    run.add_argument("--nemesis-every", type=float, help="random: pause this many seconds between faults")
    run.add_argument(
        "--clock-rate",
        action="append",
        type=_clock_rate,
        metavar="NODE=RATE",
        help="that node's clock runs RATE times real speed (repeatable; clock-drift: n1=0.5 by default)",
    )
    report = sub.add_parser("report", help="re-check a finished run and redraw its timeline")
    report.add_argument("dirs", nargs="+", metavar="DIR")


def _clock_rate(value: str) -> tuple[str, float]:
    node, _, rate = value.partition("=")
    try:
        number = float(rate)
    except ValueError:
        number = 0.0
    if not node or not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"takes NODE=RATE with RATE > 0, such as n1=0.5: {value!r}")
    return node, number


def run(args: argparse.Namespace) -> int:
    if args.lab_command == "report":
        return report(args.dirs)
    return run_scenario(args)


def report(dirs: list[str]) -> int:
    from fencekeeper.lab.report import print_summary, render

    for d in dirs:
        if not (Path(d) / "run.json").exists():
            raise CliError(f"{d} is not a lab run directory (no run.json)")
    reports = [render(d) for d in dirs]
    print_summary(reports)
    return 0 if all(r["safe"] for r in reports) else 1


def run_scenario(args: argparse.Namespace) -> int:
    from fencekeeper.lab.nemesis import cycles
    from fencekeeper.lab.report import print_summary, render
    from fencekeeper.lab.runner import Lab, LabConfig

    try:
        cycles(args.scenario, args.nodes, args.net)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    clock_rate = dict(args.clock_rate or [])
    if unknown := sorted(set(clock_rate) - {f"n{i}" for i in range(1, args.nodes + 1)}):
        raise CliError(f"--clock-rate names no node of this cluster: {', '.join(unknown)}")
    if args.net == "netns":
        from fencekeeper.lab.netns import unavailable

        if (why := unavailable()) is not None:
            raise CliError(why)
    if args.db not in (None, "pg-temp"):
        from fencekeeper.cli import _db_url

        try:
            _db_url(args.db)
        except argparse.ArgumentTypeError as exc:
            raise CliError(str(exc)) from None
    out = args.out or f"lab-runs/{args.scenario}-fencing-{args.fencing}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = LabConfig(
        scenario=args.scenario,
        out=out,
        nodes=args.nodes,
        duration=args.duration,
        seed=args.seed,
        fencing=args.fencing == "on",
        db=args.db,
        net=args.net,
        lease_ms=args.lease_ms,
        nemesis_every=args.nemesis_every,
        clock_rate=clock_rate,
    )
    console = Console()
    asyncio.run(run_with_progress(Lab(config), console))
    r = render(out)
    print_summary([r], console)
    console.print(f"run directory: {Path(out).absolute()}")
    return 0 if r["safe"] or not config.fencing else 1


async def run_with_progress(lab: Any, console: Console) -> None:
    """Run the lab with a progress bar: elapsed fault time, the leader and the last nemesis action."""
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("starting", total=lab.config.duration)

        def tick(lab: Any) -> None:
            leader = f"{lab.leader[0]} e{lab.leader[1]}" if lab.leader else "-"
            done = min(lab.config.duration, lab.config.duration - lab.time_left())
            progress.update(task, completed=done, description=f"leader {leader} | {lab.nemesis.last}")

        await lab.run(on_tick=tick)
