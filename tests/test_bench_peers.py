"""bench/peers without etcd or ZooKeeper: the recipes' decisions, the statistics, the table and the section
of docs/benchmarks.md the run rewrites."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench.peers.candidates import first_write_above, leader_of  # noqa: E402
from bench.peers.recipes import (  # noqa: E402
    b64,
    campaign_txn,
    created_revision,
    fenced_put_txn,
    predecessor,
    prefix_end,
    transaction_ok,
)
from bench.peers.report import (  # noqa: E402
    BEGIN,
    END,
    ETCD,
    FENCEKEEPER,
    HEADING,
    ZOOKEEPER,
    Rate,
    Row,
    Stat,
    markdown,
    ratio,
    replace_section,
)


def kv(key: str, revision: int) -> dict[str, str]:
    return {"key": b64(key), "create_revision": str(revision)}


def test_lowest_create_revision_leads_and_each_waits_for_the_key_just_ahead() -> None:
    keys = [kv("/e/a", 7), kv("/e/b", 12), kv("/e/c", 9)]
    assert predecessor(keys, 7) is None  # the oldest key leads
    assert predecessor(keys, 9) == b64("/e/a")
    assert predecessor(keys, 12) == b64("/e/c")  # the highest below its own, not the leader's
    assert predecessor([], 3) is None


def test_prefix_end_selects_exactly_the_prefix() -> None:
    assert base64.b64decode(prefix_end("/election/")) == b"/election0"


def test_campaign_keeps_the_revision_of_a_key_already_there() -> None:
    body = campaign_txn("/e/1f", "c1", 31)
    assert body["compare"][0] == {
        "key": b64("/e/1f"),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": "0",
    }
    assert body["success"][0]["request_put"]["lease"] == "31"
    assert created_revision({"succeeded": True, "header": {"revision": "40"}}) == 40
    existing = {"responses": [{"response_range": {"kvs": [{"create_revision": "17"}]}}], "header": {}}
    assert created_revision(existing) == 17


def test_fenced_write_puts_only_while_the_election_key_has_the_token_revision() -> None:
    body = fenced_put_txn("/e/1f", 40, "/data", b"v")
    assert body["compare"] == [
        {"key": b64("/e/1f"), "target": "CREATE", "result": "EQUAL", "create_revision": "40"}
    ]
    assert body["success"] == [{"request_put": {"key": b64("/data"), "value": b64(b"v")}}]


def test_a_kazoo_transaction_commits_only_without_exceptions() -> None:
    assert transaction_ok([True, object()])
    assert not transaction_ok([RuntimeError("BadVersion"), RuntimeError("RolledBack")])
    assert not transaction_ok([])


def test_the_leader_is_the_highest_token_whose_writes_flow() -> None:
    events = {
        "c1": [
            {"event": "elected", "token": 5},
            *[{"event": "write", "token": 5, "ts": t} for t in (1, 2, 3)],
        ],
        "c2": [{"event": "elected", "token": 9}, {"event": "write", "token": 9, "ts": 4.5}],
    }
    assert leader_of(events, min_writes=3) is None  # c2 leads but has not written enough yet
    assert leader_of(events, min_writes=1) == ("c2", 9)
    events["c2"].append({"event": "resigned", "token": 9})
    assert leader_of(events, min_writes=1) is None
    assert first_write_above(events, 5) == {"event": "write", "token": 9, "ts": 4.5}
    assert first_write_above(events, 9) is None
    assert first_write_above(events, 5, not_by="c2") is None  # the signalled leader's writes never count


def test_stat_is_min_median_nearest_rank_p99_and_counts_failures() -> None:
    stat = Stat.of([float(x) for x in range(1, 21)] + [None])
    assert (stat.trials, stat.failed, stat.min, stat.median, stat.p99) == (21, 1, 1.0, 10.5, 20.0)
    assert stat.text() == "1 / 10 / 20 (1 failed)"  # 10.5 rounds half to even
    assert Stat.of([None, None]).text() == "all 2 failed"


def test_ratios_are_fencekeeper_over_the_peer() -> None:
    ours, theirs = Stat(20, 0, 1.0, 50.0, 100.0), Stat(20, 0, 1.0, 100.0, 50.0)
    assert ratio(ours, theirs) == "0.50 / 2.00"
    assert ratio(Rate(1000.0, 30.0, 80.0), Rate(2000.0, 20.0, 60.0)) == "0.50"
    assert ratio(ours, None) == "–"
    assert ratio(Stat.of([None]), theirs) == "–"


def test_markdown_has_a_column_per_system_and_ratio() -> None:
    crash = Row("crash", {FENCEKEEPER: Stat.of([10.0]), ETCD: Stat.of([20.0]), ZOOKEEPER: Stat.of([40.0])})
    short = Row("crash 250 ms", {FENCEKEEPER: Stat.of([5.0])}, against={ETCD: Stat.of([20.0])})
    writes = Row("writes", {FENCEKEEPER: Rate(1500.0, 30.0, 80.0), ETCD: Rate(3000.0, 20.0, 60.0, 2)})
    lines = markdown([crash, short, writes], [ETCD, ZOOKEEPER]).splitlines()
    assert lines[0] == (
        f"| measure | {FENCEKEEPER} | {ETCD} | {ZOOKEEPER} "
        f"| {FENCEKEEPER} / {ETCD} | {FENCEKEEPER} / {ZOOKEEPER} |"
    )
    assert lines[1] == "| --- | ---: | ---: | ---: | ---: | ---: |"
    assert lines[2] == "| crash | 10 / 10 / 10 | 20 / 20 / 20 | 40 / 40 / 40 | 0.50 / 0.50 | 0.25 / 0.25 |"
    assert lines[3] == "| crash 250 ms | 5 / 5 / 5 | – | – | 0.25 / 0.25 (vs 2 s) | – |"
    assert lines[4] == (
        "| writes | 1,500/s (p50 30.0, p99 80 ms) | 3,000/s (p50 20.0, p99 60 ms, 2 errors) | – | 0.50 | – |"
    )


def test_section_is_replaced_between_the_markers_and_nothing_else() -> None:
    doc = (
        f"# Benchmarks\n\n## Failover\n\nfigures\n\n{HEADING}\n\nhow to run\n\n{BEGIN}\nold\n{END}\n\nread\n"
    )
    new = replace_section(doc, "new table\n")
    assert new == doc.replace(f"{BEGIN}\nold\n{END}", f"{BEGIN}\nnew table\n{END}")
    assert replace_section(new, "new table") == new  # idempotent


def test_section_is_appended_with_its_heading_when_the_markers_are_missing() -> None:
    assert replace_section("# Benchmarks\n\ntext\n", "table") == (
        f"# Benchmarks\n\ntext\n\n{HEADING}\n\n{BEGIN}\ntable\n{END}\n"
    )


def test_a_missing_peer_is_skipped_with_its_reason_when_not_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench.peers import servers

    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    monkeypatch.setattr(servers, "ZK_JAR", tmp_path / "absent.jar")
    monkeypatch.setattr(servers.os, "geteuid", lambda: 1000)
    said: list[str] = []
    why = servers.install_missing(said.append)
    assert why == {
        "etcd": "etcd-server is not installed; run as root on Debian to install it with apt-get",
        "zookeeper": "zookeeper is not installed; run as root on Debian to install it with apt-get",
    }
    assert said == []  # nothing installed, nothing run
