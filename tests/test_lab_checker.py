"""The lab checker on hand-made histories: every kind of damage it exists to find is reported."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from fencekeeper.lab import checker
from fencekeeper.lab.checker import RunData

T0 = 1_800_000_000.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(T0 + t, UTC).isoformat(timespec="milliseconds")


def write(seq: int, epoch: int, writer: str, value: int, t: float) -> dict[str, Any]:
    return {"seq": seq, "key": "counter", "op": "put", "epoch": epoch, "writer": writer, "at": iso(t),
            "value_base64": base64.b64encode(str(value).encode()).decode()}  # fmt: skip


def rejection(seq: int, token_epoch: int, current_epoch: int, writer: str, t: float) -> dict[str, Any]:
    fields = {"seq": seq, "key": "counter", "op": "put", "token_epoch": token_epoch}
    return fields | {"current_epoch": current_epoch, "writer": writer, "reason": "stale_epoch", "at": iso(t)}


def logged(r: dict[str, Any]) -> dict[str, Any]:
    return {"event": "write_rejected", "ts": r["at"]} | {
        k: r[k] for k in ("key", "op", "token_epoch", "current_epoch", "writer")
    }


def node_logs() -> dict[str, list[dict[str, Any]]]:
    return {
        "n1": [
            {"event": "became_leader", "epoch": 1, "ts": iso(0.0)},
            {"event": "fence_raised", "epoch": 1, "ts": iso(0.01)},
            {"event": "stepped_down", "epoch": 1, "ts": iso(2.0)},
        ],
        "n2": [
            {"event": "became_leader", "epoch": 2, "ts": iso(1.5)},
            {"event": "fence_raised", "epoch": 2, "ts": iso(1.51)},
        ],
    }


def clean() -> RunData:
    history = [write(i, 1, "n1", i, 0.02 * i) for i in range(1, 6)]
    history += [write(i, 2, "n2", i, 1.5 + 0.02 * i) for i in range(6, 10)]
    rejections = [rejection(1, 1, 2, "n1", 1.9)]
    return RunData(
        history=history,
        rejections=rejections,
        storage_log=[logged(r) for r in rejections],
        node_logs=node_logs(),
        nemesis=[
            {"at": T0 + 1.0, "action": "pause", "target": "n1", "phase": "start", "fault": 1},
            {"at": T0 + 2.0, "action": "resume", "target": "n1", "phase": "end", "fault": 1},
        ],
        start=T0,
        end=T0 + 2.5,
        meta={"config": {"scenario": "hand-made", "fencing": True}},
    )


def test_a_clean_history_is_safe_and_measured() -> None:
    report = checker.check(clean())
    assert report["safe"], report
    assert (report["unsafe_writes"], report["lost_updates"]) == (0, 0)
    assert (report["stale_writes_rejected"], report["stale_writes_logged"]) == (1, 1)
    assert report["election_count"] == 2
    assert report["failover_time_ms"]["count"] == 1
    assert report["failover_time_ms"]["min"] == 620.0  # the fault at 1.0 s, n2's first write at 1.62 s
    # n1 believed it led until 2.0 s, n2 from 1.5 s: one 500 ms split-brain window.
    assert report["split_brain_events"] == 1 and report["split_brain"][0]["duration_ms"] == 500.0
    assert 0 < report["write_availability_pct"] < 100


def test_a_leader_moving_to_a_fresh_epoch_is_no_failover() -> None:
    data = clean()
    # n2, elected at epoch 2, moves to epoch 7 and then 9 (`epoch_moved`); a fault at 2.2 s deposes no one.
    data.node_logs["n2"] += [
        {"event": "epoch_moved", "epoch": 7, "previous_epoch": 2, "ts": iso(1.8)},
        {"event": "epoch_moved", "epoch": 9, "previous_epoch": 7, "ts": iso(2.25)},
    ]
    data.history += [write(10, 7, "n2", 10, 1.9), write(11, 9, "n2", 11, 2.3)]
    data.nemesis.append(
        {"at": T0 + 2.2, "action": "partition", "target": "ring", "phase": "start", "fault": 2}
    )
    assert [f["failover_ms"] for f in checker.failovers(data)] == [620.0, None]
    assert checker.check(data)["safe"]


def test_a_stale_write_accepted_is_unsafe_and_a_lost_update() -> None:
    data = clean()
    data.history.append(write(10, 1, "n1", 6, 1.9))  # the old leader's late write, accepted
    report = checker.check(data)
    assert not report["safe"]
    assert report["unsafe_writes"] == 1 and report["unsafe"][0]["seq"] == 10
    assert "epoch 1 after epoch 2" in report["unsafe"][0]["why"][0]
    assert report["lost_updates"] == 1 and report["lost"][0]["kind"] == "repeat"


def test_a_stale_write_below_a_raised_fence_is_unsafe_even_in_epoch_order() -> None:
    data = clean()
    data.history = [*data.history[:5], write(6, 1, "n1", 6, 1.6)]  # n2 fenced at 1.51 but has not written
    report = checker.check(data)
    assert report["unsafe_writes"] == 1
    assert "below the fence 2" in report["unsafe"][0]["why"][0]


def test_a_duplicated_counter_value_is_a_lost_update() -> None:
    data = clean()
    data.history[6]["value_base64"] = data.history[5]["value_base64"]  # 6, 6 instead of 6, 7
    report = checker.check(data)
    assert report["lost_updates"] >= 1 and report["lost"][0]["kind"] == "repeat"
    assert report["unsafe_writes"] == 0 and not report["safe"]


def test_a_counter_gap_is_a_lost_update() -> None:
    data = clean()
    del data.history[3]
    report = checker.check(data)
    assert report["lost_updates"] == 1 and report["lost"][0]["kind"] == "gap"


def test_two_writers_in_one_epoch_are_unsafe() -> None:
    data = clean()
    data.history[7]["writer"] = "n3"
    report = checker.check(data)
    assert report["unsafe_writes"] == 1
    assert "second writer n3 in epoch 2" in report["unsafe"][0]["why"][0]


def test_a_rejection_missing_from_the_storage_log_is_reported() -> None:
    data = clean()
    data.rejections.append(rejection(2, 1, 2, "n1", 1.95))  # recorded, never logged
    report = checker.check(data)
    assert (report["stale_writes_rejected"], report["stale_writes_logged"]) == (2, 1)
    assert len(report["stale_writes_unlogged"]) == 1 and not report["safe"]


def test_a_killed_leader_believes_nothing_after_the_kill() -> None:
    data = clean()
    data.node_logs["n1"] = data.node_logs["n1"][:2]  # SIGKILL: no stepped_down line
    data.nemesis.append({"at": T0 + 1.0, "action": "kill", "target": "n1", "phase": "start", "fault": 2})
    [n1] = [iv for iv in checker.leadership_intervals(data) if iv["node"] == "n1"]
    assert n1["end"] == T0 + 1.0
    assert checker.check(data)["split_brain_events"] == 0
