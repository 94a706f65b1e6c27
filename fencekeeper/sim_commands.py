"""`fencekeeper sim`: seeded searches of the protocol core under faults, and replays of one seed."""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor

from elector.sim import MUTANTS, FaultConfig, SearchResult, SimConfig, run_seed, search
from fencekeeper.cli import CliError

TRACE_TAIL = 40


def parse_faults(spec: str | None) -> FaultConfig:
    """`none`, or comma-separated overrides of FaultConfig fields: `loss=0.1,pauses=off`."""
    if not spec:
        return FaultConfig()
    if spec == "none":
        return FaultConfig.none()
    fields = {f.name: f for f in dataclasses.fields(FaultConfig)}
    values: dict[str, object] = {}
    for item in spec.split(","):
        name, _, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in fields or not raw:
            raise CliError(f"--faults: {item!r} is not NAME=VALUE with NAME one of {', '.join(fields)}")
        default = getattr(FaultConfig(), name)
        if isinstance(default, bool):
            if raw not in ("on", "off"):
                raise CliError(f"--faults: {name} takes on or off")
            values[name] = raw == "on"
        elif isinstance(default, float | int):
            try:
                values[name] = float(raw)
            except ValueError:
                raise CliError(f"--faults: {name} takes a number, not {raw!r}") from None
        else:
            raise CliError(f"--faults: {name} cannot be set from the command line")
    return FaultConfig(**values)


def _search_chunk(args: tuple[int, int, SimConfig]) -> SearchResult:
    first, runs, config = args
    return search(first, runs, config)


def run_search(first: int, runs: int, config: SimConfig, jobs: int) -> SearchResult:
    """Seeds first..first+runs-1, split over `jobs` processes; stops early only within a chunk."""
    if jobs <= 1:
        return search(first, runs, config)
    size = -(-runs // jobs)
    chunks = [(first + i, min(size, runs - i), config) for i in range(0, runs, size)]
    total = SearchResult()
    started = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        for part in pool.map(_search_chunk, chunks):
            for name in ("runs", "events", "faults", "checks", "split_brain_events", "elections"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.violations += part.violations
    total.seconds = time.perf_counter() - started
    total.violations.sort(key=lambda r: r.seed)
    return total


def run(args: argparse.Namespace) -> int:
    if args.list_mutants:
        for name, mutant in MUTANTS.items():
            print(f"{name}\t{mutant.description}")
        return 0
    if args.mutant is not None and args.mutant not in MUTANTS:
        raise CliError(f"--mutant {args.mutant!r}: not one of {', '.join(MUTANTS)} (see --list-mutants)")
    if args.runs < 1 or args.jobs < 1:
        raise CliError("--runs and --jobs must be at least 1")
    config = SimConfig(voters=args.voters, faults=parse_faults(args.faults), mutant=args.mutant)
    if args.replay is not None:
        result = run_seed(args.replay, config)
        print("\n".join(result.trace))
        print(f"trace hash {result.trace_hash}")
        return 1 if result.violation else 0
    total = run_search(args.seed, args.runs, config, args.jobs)
    seconds = max(total.seconds, 1e-9)
    print(
        f"runs {total.runs} ({total.runs / seconds:.1f}/s), "
        f"events {total.events} ({total.events / seconds:.0f}/s), "
        f"faults injected {total.faults}, invariant checks {total.checks}, elections {total.elections}, "
        f"split-brain events {total.split_brain_events} (counted where pauses or drift beyond the bound "
        f"allow them), violations {len(total.violations)}"
    )
    if total.violations:
        first = total.violations[0]
        print(f"\nseed {first.seed}: {first.violation}")
        print(f"last {TRACE_TAIL} lines of its trace (all of it: fencekeeper sim --replay {first.seed}):")
        print("\n".join([first.trace[0], *first.trace[-TRACE_TAIL:]]))
        return 1
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    sim = commands.add_parser("sim", help="deterministic simulation of the protocol under faults")
    sim.add_argument("--runs", type=int, default=200, help="seeds to run (default 200)")
    sim.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    sim.add_argument(
        "--voters", type=int, choices=[3, 5], help="voters per cluster (default: 3 or 5 by seed)"
    )
    sim.add_argument(
        "--faults", help="'none', or overrides such as loss=0.1,pauses=off (see docs/testing.md)"
    )
    sim.add_argument("--mutant", help="run a deliberately broken variant (see --list-mutants)")
    sim.add_argument("--replay", type=int, metavar="SEED", help="run one seed and print its whole trace")
    sim.add_argument("--list-mutants", action="store_true", help="print the mutant names, one a line")
    sim.add_argument("--jobs", type=int, default=1, help="processes to spread the seeds over")
