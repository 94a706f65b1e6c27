"""The lab's verdict: what the storage accepted and refused, what the nodes believed, what the nemesis did.

Why from evidence only: the checker reads the run directory (history.json, rejections.json, storage.log,
n*.log, nemesis.jsonl, run.json), never the live processes, so a finished run can be re-checked and the
rules can be unit-tested on hand-made bad histories.

Safety (must be zero with fencing on):
* `unsafe_writes`: accepted writes out of epoch order (an epoch below one accepted earlier), a second
  writer inside one epoch, or an epoch below a fence a node had already seen raised.
* `lost_updates`: accepted counter values that are not "highest so far + 1" in commit order (a repeated
  value, a value going back, or a gap).
* `stale_writes_unlogged`: rejections the storage recorded but did not log as `write_rejected`.
"""

from __future__ import annotations

import base64
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

WINDOW_S = 0.1  # write availability is measured in windows this long
COMPOUND_S = 0.5  # faults that start this close together count as one (failover is measured once)


def ts(value: str | float) -> float:
    """Unix seconds from an ISO-8601 timestamp (the logs, the storage) or a number (the nemesis)."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(value).timestamp()


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by SIGKILL
    return out


@dataclass
class RunData:
    """Everything a verdict is computed from; `load` reads it from a run directory."""

    history: list[dict[str, Any]]
    rejections: list[dict[str, Any]] = field(default_factory=list)
    storage_log: list[dict[str, Any]] = field(default_factory=list)
    node_logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    nemesis: list[dict[str, Any]] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def load(run_dir: str | Path) -> RunData:
    run = Path(run_dir)
    meta = json.loads((run / "run.json").read_text())
    nodes = meta.get("nodes", [])
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else []
    rejections = (
        json.loads((run / "rejections.json").read_text()) if (run / "rejections.json").exists() else []
    )
    return RunData(
        history=history,
        rejections=rejections,
        storage_log=_jsonl(run / "storage.log"),
        node_logs={n: _jsonl(run / f"{n}.log") for n in nodes},
        nemesis=_jsonl(run / "nemesis.jsonl"),
        start=meta.get("started", 0.0),
        end=meta.get("ended", 0.0),
        meta=meta,
    )


def value_of(write: dict[str, Any]) -> int | None:
    raw = write.get("value_base64")
    if raw is None:
        return write.get("value")
    try:
        return int(base64.b64decode(raw))
    except ValueError:
        return None


# -- safety -----------------------------------------------------------------------------------------------


def unsafe_writes(data: RunData) -> list[dict[str, Any]]:
    """Accepted writes that a fenced storage must have refused."""
    fences = sorted(
        (ts(e["ts"]), e["epoch"])
        for events in data.node_logs.values()
        for e in events
        if e.get("event") == "fence_raised"
    )
    found = []
    top = 0
    writers: dict[int, str] = {}
    for w in data.history:
        epoch, writer = w["epoch"], w.get("writer")
        reasons = []
        if epoch < top:
            reasons.append(f"epoch {epoch} after epoch {top} was accepted")
        first = writers.setdefault(epoch, writer)
        if writer != first:
            reasons.append(f"second writer {writer} in epoch {epoch} (first {first})")
        if "at" in w:
            seen = [e for t, e in fences if t < ts(w["at"])]
            if seen and epoch < max(seen):
                reasons.append(f"epoch {epoch} below the fence {max(seen)} already raised")
        if reasons:
            found.append(
                {"seq": w.get("seq"), "epoch": epoch, "writer": writer, "value": value_of(w), "why": reasons}
            )
        top = max(top, epoch)
    return found


def lost_updates(data: RunData) -> list[dict[str, Any]]:
    """Counter values that are not the highest so far + 1: a repeat (an increment lost) or a gap."""
    found = []
    top = 0
    for w in data.history:
        value = value_of(w)
        if value is None:
            continue
        if value != top + 1:
            kind = "repeat" if value <= top else "gap"
            found.append({"seq": w.get("seq"), "epoch": w["epoch"], "writer": w.get("writer"), "value": value,
                          "expected": top + 1, "kind": kind})  # fmt: skip
        top = max(top, value)
    return found


def unlogged_rejections(data: RunData) -> list[dict[str, Any]]:
    """Rejections (from the database) with no matching `write_rejected` line in the storage log."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r.get("key"), r.get("op"), r.get("token_epoch"), r.get("current_epoch"), r.get("writer"))

    logged = Counter(key(e) for e in data.storage_log if e.get("event") == "write_rejected")
    missing = []
    for r in data.rejections:
        if logged[key(r)] > 0:
            logged[key(r)] -= 1
        else:
            missing.append(r)
    return missing


# -- what the nodes believed ------------------------------------------------------------------------------


def leadership_intervals(data: RunData) -> list[dict[str, Any]]:
    """(node, epoch, start, end) of each believed leadership, from became_leader to stepped_down.

    A node killed while leading believes nothing from the kill on; one still leading at the end, until
    the end. A paused node keeps believing (it will act on it when it wakes).
    """
    kills = {
        n: sorted(ts(e["at"]) for e in data.nemesis if e.get("action") == "kill" and e.get("target") == n)
        for n in data.node_logs
    }
    intervals = []
    for node, events in data.node_logs.items():
        current: dict[str, Any] | None = None
        for e in events:
            if e.get("event") == "became_leader":
                current = {"node": node, "epoch": e["epoch"], "start": ts(e["ts"]), "end": None}
                intervals.append(current)
            elif e.get("event") == "stepped_down" and current is not None and current["end"] is None:
                current["end"] = ts(e["ts"])
        for iv in intervals:
            if iv["node"] == node and iv["end"] is None:
                later = [k for k in kills.get(node, []) if k >= iv["start"]]
                iv["end"] = later[0] if later else max(data.end, iv["start"])
    return intervals


def split_brain(intervals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Moments when two different nodes both believed they led."""
    events = []
    for i, a in enumerate(intervals):
        for b in intervals[i + 1 :]:
            if a["node"] == b["node"]:
                continue
            start, end = max(a["start"], b["start"]), min(a["end"], b["end"])
            if end > start:
                pair = {"nodes": sorted([a["node"], b["node"]]), "epochs": sorted([a["epoch"], b["epoch"]])}
                events.append(pair | {"start": start, "duration_ms": round((end - start) * 1000, 1)})
    return sorted(events, key=lambda e: e["start"])


# -- liveness ---------------------------------------------------------------------------------------------


def elected_epoch(data: RunData) -> dict[int, int]:
    """Epoch -> the epoch its leader was elected at. A leader that moved to a fresh epoch (`epoch_moved`)
    leads on: its writes at the fresh epoch are no failover."""
    moved = {
        e["epoch"]: e["previous_epoch"]
        for events in data.node_logs.values()
        for e in events
        if e.get("event") == "epoch_moved"
    }
    elected: dict[int, int] = {}
    for epoch in moved:
        first = epoch
        while first in moved:
            first = moved[first]
        elected[epoch] = first
    return elected


def failovers(data: RunData) -> list[dict[str, Any]]:
    """For each fault: the time to the first accepted write of a newer election (before the next fault)."""
    elected = elected_epoch(data)
    writes = [(ts(w["at"]), elected.get(w["epoch"], w["epoch"])) for w in data.history if "at" in w]
    starts: list[float] = []
    for t in sorted(ts(e["at"]) for e in data.nemesis if e.get("phase") == "start"):
        if not starts or t - starts[-1] > COMPOUND_S:  # faults started together are one fault
            starts.append(t)
    out = []
    for i, t0 in enumerate(starts):
        until = starts[i + 1] if i + 1 < len(starts) else float("inf")
        before = [e for t, e in writes if t <= t0]
        epoch = before[-1] if before else 0
        after = next(((t, e) for t, e in writes if t0 < t < until and e > epoch), None)
        fault = next(e for e in data.nemesis if e.get("phase") == "start" and ts(e["at"]) == t0)
        out.append({"fault": f"{fault['action']} {fault['target']}", "at": t0,
                    "failover_ms": round((after[0] - t0) * 1000, 1) if after else None})  # fmt: skip
    return out


def availability(data: RunData) -> float:
    """Share of WINDOW_S windows, from the first accepted write to the end, holding an accepted write."""
    times = sorted(ts(w["at"]) for w in data.history if "at" in w)
    if not times:
        return 0.0
    end = max(data.end, times[-1])
    windows = max(1, int((end - times[0]) / WINDOW_S) + 1)
    hit = {int((t - times[0]) / WINDOW_S) for t in times}
    return round(100.0 * len(hit) / windows, 1)


def _stats(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"count": 0, "min": None, "median": None, "p99": None}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "count": len(ordered),
        "min": ordered[0],
        "median": round(statistics.median(ordered), 1),
        "p99": p99,
    }


def check(data: RunData) -> dict[str, Any]:
    """The report: liveness figures, split-brain windows and the safety verdict."""
    intervals = leadership_intervals(data)
    brains = split_brain(intervals)
    unsafe = unsafe_writes(data)
    lost = lost_updates(data)
    unlogged = unlogged_rejections(data)
    fo = failovers(data)
    config = data.meta.get("config", {})
    return {
        "scenario": config.get("scenario"),
        "fencing": config.get("fencing", True),
        "nodes": len(data.node_logs),
        "duration_s": round(data.end - data.start, 1) if data.end else None,
        "failover_time_ms": _stats([f["failover_ms"] for f in fo if f["failover_ms"] is not None]),
        "faults": fo,
        "split_brain_events": len(brains),
        "split_brain_ms": round(sum(b["duration_ms"] for b in brains), 1),
        "split_brain": brains,
        "write_availability_pct": availability(data),
        "election_count": len(intervals),
        "accepted_writes": len(data.history),
        "stale_writes_rejected": len(data.rejections),
        "stale_writes_logged": len(data.rejections) - len(unlogged),
        "stale_writes_unlogged": unlogged,
        "unsafe_writes": len(unsafe),
        "unsafe": unsafe[:20],
        "lost_updates": len(lost),
        "lost": lost[:20],
        "safe": not unsafe and not lost and not unlogged,
    }
