"""Deterministic simulation of whole clusters running the real protocol core, with faults and checkers."""

from elector.sim._checker import Checker, Violation
from elector.sim._faults import FaultConfig
from elector.sim._mutants import MUTANTS
from elector.sim._run import RunResult, SearchResult, SimConfig, run_seed, search
from elector.sim._storage import StorageModel
from elector.sim._world import SimNode, World

__all__ = [
    "MUTANTS",
    "Checker",
    "FaultConfig",
    "RunResult",
    "SearchResult",
    "SimConfig",
    "SimNode",
    "StorageModel",
    "Violation",
    "World",
    "run_seed",
    "search",
]
