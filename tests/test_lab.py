"""The partition lab end to end: real nodes and a storage service behind the proxies, a real fault.

With fencing on the storage must refuse every write of the old leader (nothing unsafe, no lost update,
each refusal in the storage log); with `--fencing off` the same scenario must show the damage, which is
what proves the scenario really makes an old leader write after the new one started. The two classic
scenarios run through `fencekeeper demo`, both arms; the others once each with fencing on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fencekeeper.lab import checker
from fencekeeper.lab.runner import Lab, LabConfig

pytestmark = pytest.mark.slow


def test_demo_shows_both_split_brains_refused_with_fencing_and_damaging_without(tmp_path: Path) -> None:
    """`fencekeeper demo` runs leader-pause and leader-partition with fencing on and off: with it every
    late write of the old leader is refused and logged; without it the same write does damage."""
    result = subprocess.run(
        [sys.executable, "-m", "fencekeeper", "demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"event": "write_rejected"') >= 2  # the storage's log lines, shown whole
    for scenario in ("leader-pause", "leader-partition"):
        assert f"{scenario}, fencing on: safe" in result.stdout
        assert f"{scenario}, fencing off: damaged" in result.stdout
        on = json.loads((tmp_path / f"{scenario}-fencing-on" / "report.json").read_text())
        off = json.loads((tmp_path / f"{scenario}-fencing-off" / "report.json").read_text())
        assert on["safe"] and on["stale_writes_rejected"] >= 1
        assert on["stale_writes_logged"] == on["stale_writes_rejected"]
        assert on["unsafe_writes"] == on["lost_updates"] == 0
        assert not off["safe"] and off["stale_writes_rejected"] == 0
        assert off["lost_updates"] > 0 or off["unsafe_writes"] > 0
        for r in (on, off):
            assert r["election_count"] >= 2 and r["failover_time_ms"]["count"] >= 1, r
            assert r["accepted_writes"] > 50 and Path(r["timeline"]).stat().st_size > 10_000, r


# -- every other scenario, one short run each with fencing on -----------------------------------------------
# Lease 600 ms and about one cycle each (the settle phase after the duration lets the last fault play out):
# together about 100 s on two cores.

SHORT_LEASE_MS = 600


async def lab_run(
    tmp_path: Path, scenario: str, duration: float, **config: Any
) -> tuple[dict[str, Any], checker.RunData]:
    out = tmp_path / scenario.replace("+", "-")
    await Lab(
        LabConfig(scenario, str(out), duration=duration, seed=1, lease_ms=SHORT_LEASE_MS, **config)
    ).run()
    data = checker.load(out)
    return checker.check(data), data


def assert_safe(result: dict[str, Any]) -> None:
    """Fencing on: nothing unsafe, no lost update, every refusal in the storage log, and writes."""
    assert result["unsafe_writes"] == 0, result["unsafe"]
    assert result["lost_updates"] == 0, result["lost"]
    assert result["stale_writes_logged"] == result["stale_writes_rejected"], result["stale_writes_unlogged"]
    assert result["safe"] and result["accepted_writes"] > 20, result


def faults(data: checker.RunData, action: str) -> list[tuple[float, float]]:
    """(start, end) of each fault of this action, from the nemesis log."""
    ends = {e["fault"]: checker.ts(e["at"]) for e in data.nemesis if e["phase"] == "end"}
    return [(checker.ts(e["at"]), ends[e["fault"]]) for e in data.nemesis
            if e["phase"] == "start" and e["action"] == action]  # fmt: skip


def writes_between(data: checker.RunData, start: float, end: float) -> list[dict[str, Any]]:
    return [w for w in data.history if start < checker.ts(w["at"]) < end]


@pytest.mark.parametrize(
    ("scenario", "duration", "elections"),
    [("leader-crash", 3.0, 2), ("asymmetric", 3.0, 2), ("halves", 3.0, 2), ("flapping", 3.8, 3)],
)
async def test_faults_that_hurt_the_leader_move_leadership_safely(
    tmp_path: Path, scenario: str, duration: float, elections: int
) -> None:
    """The leader killed, unheard (one-way loss), in the minority, or isolated again and again (flapping:
    two of its three cuts outlast the lease): a new leader is elected and writes each time."""
    result, _ = await lab_run(tmp_path, scenario, duration)
    assert_safe(result)
    assert result["election_count"] >= elections, result
    assert result["failover_time_ms"]["count"] >= elections - 1, result["faults"]


async def test_delayed_write_arrives_after_the_new_fence_and_is_refused(tmp_path: Path) -> None:
    result, data = await lab_run(tmp_path, "delayed-write", 3.0)
    assert_safe(result)
    held = next(e["target"] for e in data.nemesis if e["action"] == "hold-storage")
    newer_fences = [(checker.ts(e["ts"]), e["epoch"]) for n, events in data.node_logs.items() if n != held
                    for e in events if e.get("event") == "fence_raised"]  # fmt: skip
    late = [r for r in data.rejections if r["writer"] == held and r["reason"] == "stale_epoch"]
    assert late, data.rejections
    for r in late:  # it was sent before the fence was raised (held since), and landed after it
        assert any(t < checker.ts(r["at"]) and epoch == r["current_epoch"] for t, epoch in newer_fences)
        assert r["token_epoch"] < r["current_epoch"]


async def test_storage_and_postgres_restart_keep_the_fence(tmp_path: Path) -> None:
    from fencekeeper.pgtemp import PgTempError, find_bin_dir

    try:
        find_bin_dir()
    except PgTempError as exc:
        pytest.skip(str(exc))
    result, data = await lab_run(tmp_path, "storage-restart", 2.2, db="pg-temp")
    assert_safe(result)
    kill = next(e for e in data.nemesis if e["action"] == "storage-kill")
    start = next(e for e in data.nemesis if e["action"] == "storage-start")
    assert kill["postgres"] != start["postgres"] is not None  # PostgreSQL crashed and came back (pid)
    before = [w for w in data.history if checker.ts(w["at"]) < checker.ts(kill["at"])]
    after = [w for w in data.history if checker.ts(w["at"]) > checker.ts(start["at"])]
    start_iso = datetime.fromtimestamp(start["at"], UTC).isoformat()
    assert before and after  # writes resume (the counter going on without a gap is checked above)
    # The leader fences again after the storage errors; the fence it finds is the one it had raised.
    refenced = [e for events in data.node_logs.values() for e in events
                if e.get("event") == "fence_raised" and e["ts"] > start_iso]  # fmt: skip
    assert refenced and all(e["previous_epoch"] == before[-1]["epoch"] for e in refenced), refenced


async def test_five_node_partitions_keep_one_leader_writing(tmp_path: Path) -> None:
    """The majorities ring and the bridge, in turn on one 5-node cluster: every node sees a majority, so
    some leader must still write once the old leases have run out, and never two at once."""
    result, data = await lab_run(tmp_path, "majorities-ring+bridge", 7.5, nodes=5)
    assert_safe(result)
    shapes = faults(data, "majorities-ring") + faults(data, "bridge")
    assert len(shapes) == 2
    for start, end in shapes:
        assert writes_between(data, start + 2.5 * SHORT_LEASE_MS / 1000, end), (start, end)


@pytest.mark.parametrize("fencing", [True, False])
async def test_clock_drift_beyond_the_bound_is_caught_by_the_fence(tmp_path: Path, fencing: bool) -> None:
    """n1's clock runs at half speed: led, then cut off, it trusts its lease twice as long as its voters
    keep it, and writes on while the next leader writes. The fence refuses it; without it, damage."""
    result, _ = await lab_run(tmp_path, "clock-drift", 5.0, fencing=fencing)
    assert result["split_brain_events"] >= 1 and "n1" in result["split_brain"][0]["nodes"], result
    if fencing:
        assert_safe(result)
        assert result["stale_writes_rejected"] >= 1
    else:
        assert result["lost_updates"] > 0 or result["unsafe_writes"] > 0, result


async def test_netns_partitions_with_iptables_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from fencekeeper.lab.netns import unavailable

    if (why := unavailable()) is not None:
        pytest.skip(why)

    def network() -> tuple[str, str]:
        show = [
            subprocess.run(["ip", *a], capture_output=True, text=True).stdout for a in (["netns"], ["link"])
        ]
        return show[0], "\n".join(line for line in show[1].splitlines() if ": fk" in line)

    before = network()
    result, data = await lab_run(tmp_path, "halves", 3.0, net="netns")
    assert network() == before
    assert_safe(result)
    assert result["election_count"] >= 2 and faults(data, "halves"), result
    assert data.meta["config"]["net"] == "netns"
