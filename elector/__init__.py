"""fencekeeper's elector: quorum leases whose epochs fence the storage.

    from elector import FencedWriter, LeadershipLost, Node, leadership

The names are loaded on first use, so that `elector.core` (pure) and `elector.cluster` (which the storage
service imports) do not pull in the node runtime and the storage client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elector.node.runtime import LeadershipLost, Lease, Node
    from elector.writer import FencedWriter, leadership

_EXPORTS = {
    "FencedWriter": "elector.writer",
    "LeadershipLost": "elector.node.runtime",
    "Lease": "elector.node.runtime",
    "Node": "elector.node.runtime",
    "leadership": "elector.writer",
}

__all__ = ["FencedWriter", "LeadershipLost", "Lease", "Node", "leadership"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'elector' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
