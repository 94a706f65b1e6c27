"""`fencekeeper cluster init` and the cluster file: what it writes, and a clear error for a bad one."""

from __future__ import annotations

import stat

import pytest

from elector.cluster import ClusterFileError, Timing, init, load
from tests.test_cli import fencekeeper


def test_init_writes_members_keys_and_timing(tmp_path) -> None:
    result = fencekeeper("cluster", "init", "--nodes", "5", "--out", str(tmp_path), "--base-port", "7200")
    assert result.returncode == 0, result.stderr
    cluster = load(tmp_path / "cluster.toml")
    assert [(m.id, m.address) for m in cluster.members] == [
        (f"n{i}", f"127.0.0.1:{7199 + i}") for i in range(1, 6)
    ]
    assert cluster.quorum == 3
    assert cluster.timing == Timing()
    for member in cluster.members:
        key_path = tmp_path / member.key_file
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        signature = cluster.private_key(member.id).sign(b"x")
        member.verifying_key().verify(signature, b"x")


def test_lease_scales_the_other_timings(tmp_path) -> None:
    cluster = init(tmp_path, 3, timing=Timing.for_lease(250))
    assert (cluster.timing.lease_ms, cluster.timing.renew_ms, cluster.timing.request_timeout_ms) == (
        250,
        62,
        31,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cluster = ", "not valid TOML"),
        ('cluster = "c"\n', "lacks or misnames a setting"),
        (
            'cluster = "c"\n[[members]]\nid = "n1"\naddress = "h:1"\npublic_key = "AAAA"\n',
            "invalid public_key",
        ),
        ('cluster = "c"\nmembers = []\n[timing]\nlease_ms = 1\n', "lease_ms must be"),
        ('cluster = "c"\nmembers = []\n[timing]\nlease_sm = 1\n', "lacks or misnames a setting"),
    ],
)
def test_bad_cluster_files_name_the_problem(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    with pytest.raises(ClusterFileError, match=message):
        load(path)


def test_cli_errors_are_one_line(tmp_path) -> None:
    for args, message in [
        (["cluster", "init", "--out", str(tmp_path), "--lease-ms", "10"], "lease_ms must be"),
        (["storage", "serve", "--token-verify", "quorum"], "needs --cluster"),
        (
            ["storage", "serve", "--token-verify", "quorum", "--cluster", str(tmp_path / "no.toml")],
            "cannot read",
        ),
    ]:
        result = fencekeeper(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
