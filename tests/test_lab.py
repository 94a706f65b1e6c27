"""The partition lab end to end: three real nodes and a storage service behind the proxies, a real fault.

With fencing on the storage must refuse every write of the old leader (nothing unsafe, no lost update,
each refusal in the storage log); with `--fencing off` the same scenario must show the damage, which is
what proves the scenario really makes an old leader write after the new one started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fencekeeper.lab import checker, report
from fencekeeper.lab.runner import Lab, LabConfig

pytestmark = pytest.mark.slow

LEASE_MS = 800
# leader-pause wakes the old leader into a race with its own timer (it usually, not always, writes once
# more): two cycles. leader-partition's delayed write is deterministic: one cycle.
DURATION = {"leader-pause": 8.5, "leader-partition": 5.0}


async def run(tmp_path: Path, scenario: str, fencing: bool) -> dict[str, Any]:
    out = tmp_path / f"{scenario}-{'on' if fencing else 'off'}"
    config = LabConfig(
        scenario, str(out), duration=DURATION[scenario], seed=1, fencing=fencing, lease_ms=LEASE_MS
    )
    await Lab(config).run()
    result = checker.check(checker.load(out))
    assert result["accepted_writes"] > 50, result
    assert result["election_count"] >= 2 and result["failover_time_ms"]["count"] >= 1, result
    return result


def assert_files(png: Path, report_json: Path) -> None:
    assert png.stat().st_size > 10_000 and report_json.exists()


@pytest.mark.parametrize("scenario", ["leader-pause", "leader-partition"])
async def test_fencing_on_keeps_the_counter_safe_and_logs_every_refusal(
    tmp_path: Path, scenario: str
) -> None:
    result = await run(tmp_path, scenario, fencing=True)
    assert result["unsafe_writes"] == 0, result["unsafe"]
    assert result["lost_updates"] == 0, result["lost"]
    assert result["stale_writes_logged"] == result["stale_writes_rejected"], result["stale_writes_unlogged"]
    assert result["safe"]
    if scenario == "leader-partition":  # its in-flight write always lands after the new fence
        assert result["stale_writes_rejected"] >= 1
        rendered = report.render(tmp_path / f"{scenario}-on")
        assert_files(Path(rendered["timeline"]), tmp_path / f"{scenario}-on" / "report.json")


@pytest.mark.parametrize("scenario", ["leader-pause", "leader-partition"])
async def test_fencing_off_shows_the_damage(tmp_path: Path, scenario: str) -> None:
    result = await run(tmp_path, scenario, fencing=False)
    assert result["stale_writes_rejected"] == 0
    assert result["lost_updates"] > 0 or result["unsafe_writes"] > 0, result
    assert not result["safe"]
