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
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("--nodes", type=int, choices=[3, 5], default=3)
    run.add_argument("--duration", type=float, default=20.0, help="seconds of faults (default 20)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--fencing", choices=["on", "off"], default="on", help="off: the control arm")
    run.add_argument("--db", help="database URL, or pg-temp for a throwaway PostgreSQL (default: SQLite)")
    run.add_argument("--net", choices=["proxy"], default="proxy", help="how faults are injected")
    run.add_argument("--out", help="run directory (default lab-runs/SCENARIO-fencing-TIME)")
    run.add_argument("--lease-ms", type=int, default=1000, help="lease length (default 1000)")
    run.add_argument("--nemesis-every", type=float, help="random: pause this many seconds between faults")
    report = sub.add_parser("report", help="re-check a finished run and redraw its timeline")
    report.add_argument("dirs", nargs="+", metavar="DIR")


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
    from fencekeeper.lab.nemesis import FIVE_NODES
    from fencekeeper.lab.report import print_summary, render
    from fencekeeper.lab.runner import Lab, LabConfig

    if args.scenario in FIVE_NODES and args.nodes < 5:
        raise CliError(f"{args.scenario} needs --nodes 5")
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
