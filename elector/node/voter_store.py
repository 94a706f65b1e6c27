"""The voter's durable state: one small JSON file, replaced atomically and fsynced before any grant leaves.

A crash at any instant leaves either the old file or the new one, never a torn one: the new state is
written to a temporary file, fsynced, renamed over the old, and the directory is fsynced so that the
rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from elector.core import Promise


class VoterStore:
    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "voter.json"

    def load(self) -> dict[str, Promise]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {group: Promise(p["epoch"], p["holder"]) for group, p in data["promises"].items()}

    def save(self, promises: dict[str, Promise]) -> None:
        """Replace the state with `promises` (all groups) and return only once it is on disk."""
        body = {"promises": {g: {"epoch": p.epoch, "holder": p.holder} for g, p in sorted(promises.items())}}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
