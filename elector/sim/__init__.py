"""Deterministic simulation of whole clusters running the real protocol core."""

from elector.sim._world import SimNode, World

__all__ = ["SimNode", "World"]
