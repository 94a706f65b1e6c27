"""Configuration by environment (FENCEKEEPER_*), the table in docs/configuration.md, and start-up checks:
a wrong or missing setting stops the command with one plain line before anything listens."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from elector import cluster as cluster_file
from fencekeeper.cli import build_parser, env_actions
from fencekeeper.processes import free_base_port
from tests.test_cli import fencekeeper

ROOT = Path(__file__).resolve().parent.parent
CONFIGURABLE = (
    ("storage", "serve"),
    ("storage", "migrate"),
    ("storage", "audit"),
    ("node", "run"),
    ("workload",),
)


def subparser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser({})
    for word in words:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = commands.choices[word]
    return parser


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("fencekeeper: "), result.stderr
    return lines[0]


# -- the mechanism -----------------------------------------------------------------------------------------


def test_command_line_beats_environment_beats_default() -> None:
    env = {
        "FENCEKEEPER_PORT": "9000",
        "FENCEKEEPER_MAX_BODY": "2k",
        "FENCEKEEPER_DB_URL": "sqlite+aiosqlite://",
    }
    args = build_parser(env).parse_args(["storage", "serve", "--port", "9001"])
    assert (args.port, args.max_body, args.db, args.host) == (9001, 2048, "sqlite+aiosqlite://", "127.0.0.1")


def test_required_options_and_lists_from_the_environment() -> None:
    env = {
        "FENCEKEEPER_CLUSTER": "c.toml",
        "FENCEKEEPER_NODE_ID": "n2",
        "FENCEKEEPER_DATA_DIR": "/d",
        "FENCEKEEPER_GROUPS": "orders, billing",
    }
    args = build_parser(env).parse_args(["node", "run"])
    assert (args.cluster, args.id, args.data_dir, args.groups) == (
        "c.toml",
        "n2",
        "/d",
        ["orders", "billing"],
    )
    # A repeatable option on the command line replaces the variable's list; it does not add to it.
    assert build_parser(env).parse_args(["node", "run", "--group", "x"]).groups == ["x"]
    assert build_parser({}).parse_args(["workload", "--node", "u", "--storage", "s"]).groups is None


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("TRUE", True), ("no", False)])
def test_flags(value: str, expected: bool) -> None:
    args = build_parser({"FENCEKEEPER_NO_MIGRATE": value}).parse_args(["storage", "serve"])
    assert args.no_migrate is expected


def test_empty_counts_as_unset_and_other_commands_ignore_the_variables() -> None:
    assert build_parser({"FENCEKEEPER_PORT": ""}).parse_args(["storage", "serve"]).port == 8080
    args = build_parser({"FENCEKEEPER_PORT": "x", "FENCEKEEPER_HOST": "h"}).parse_args(
        ["cluster", "init", "--out", "o"]
    )
    assert args.host == "127.0.0.1"  # `cluster init --host` is not read from the environment


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"FENCEKEEPER_PORT": "x"}, ["storage", "serve"], "FENCEKEEPER_PORT: not a TCP port: 'x'"),
        ({"FENCEKEEPER_POOL_SIZE": "many"}, ["storage", "serve"], "FENCEKEEPER_POOL_SIZE: invalid int value"),
        (
            {"FENCEKEEPER_FENCING": "maybe"},
            ["storage", "serve"],
            "FENCEKEEPER_FENCING: invalid choice: 'maybe'",
        ),
        ({"FENCEKEEPER_NO_MIGRATE": "sure"}, ["storage", "serve"], "FENCEKEEPER_NO_MIGRATE: not one of"),
        ({"FENCEKEEPER_DB_URL": "mysql://x"}, ["storage", "migrate"], "FENCEKEEPER_DB_URL: --db must start"),
        (
            {"FENCEKEEPER_WRITE_INTERVAL_MS": "0"},
            ["node", "run"],
            "FENCEKEEPER_WRITE_INTERVAL_MS: not a positive",
        ),
        ({"FENCEKEEPER_NODE_ID": "n1"}, ["node", "run"], "required: --cluster, --data-dir"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(env: dict[str, str], args: list[str], message: str) -> None:
    assert message in one_line(fencekeeper(*args, env=env))


def test_help_names_each_variable() -> None:
    for words in CONFIGURABLE:
        help_text = re.sub(r"\s+", " ", subparser(words).format_help())
        for action in env_actions(subparser(words)):
            assert f"[env {action.env_var}" in help_text, (words, action.dest)
    # A wrong variable does not stand between the user and the help that explains it.
    shown = fencekeeper("storage", "serve", "--help", env={"FENCEKEEPER_PORT": "x"})
    assert shown.returncode == 0 and "FENCEKEEPER_PORT" in shown.stdout, shown.stderr


# -- docs/configuration.md ---------------------------------------------------------------------------------


def test_the_table_in_docs_lists_every_variable_with_its_default() -> None:
    rows = {}
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            command, option, variable, default = (c.strip("`") for c in cells[:4])
            rows[(command, option)] = (variable, default)
    expected = {}
    for words in CONFIGURABLE:
        for action in env_actions(subparser(words)):
            expected[(" ".join(words), action.option_strings[0])] = action
    assert set(rows) == set(expected), "docs/configuration.md lists other options than the code reads"
    for key, action in expected.items():
        variable, default = rows[key]
        assert variable == action.env_var, key
        if action.default not in (None, False):
            assert default == str(action.default).removesuffix(".0"), (key, default, action.default)


# -- start-up checks, with real processes ------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> cluster_file.Cluster:
    return cluster_file.init(tmp_path / "cluster", 3, base_port=free_base_port(3))


def node_env(cluster: cluster_file.Cluster, tmp_path: Path, /, **overrides: str) -> dict[str, str]:
    env = {
        "FENCEKEEPER_CLUSTER": str(cluster.path),
        "FENCEKEEPER_NODE_ID": "n1",
        "FENCEKEEPER_DATA_DIR": str(tmp_path / "data"),
    }
    return env | {f"FENCEKEEPER_{k.upper()}": v for k, v in overrides.items()}


def test_node_start_up_failures(cluster: cluster_file.Cluster, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "voter.json").write_text('{"promises": ')
    assert cluster.path is not None
    (cluster.path.parent / "n3.key").write_text("not a key")
    cases = [
        (node_env(cluster, tmp_path, cluster=str(tmp_path / "nope.toml")), "cannot read the cluster file"),
        (node_env(cluster, tmp_path, cluster=str(tmp_path / "a-file")), "lacks or misnames a setting"),
        (node_env(cluster, tmp_path, node_id="n7"), "no member 'n7' in the cluster (members: n1, n2, n3)"),
        (node_env(cluster, tmp_path, node_id="n3"), "cannot read the private key"),
        (node_env(cluster, tmp_path, data_dir=str(tmp_path / "a-file" / "d")), "cannot use --data-dir"),
        (node_env(cluster, tmp_path, data_dir=str(damaged)), "voter.json is damaged"),
        (node_env(cluster, tmp_path, log_file=str(tmp_path / "no" / "n1.log")), "cannot write --log-file"),
        (node_env(cluster, tmp_path, groups="bad/name"), "--group 'bad/name'"),
        (node_env(cluster, tmp_path, listen="192.0.2.1"), "cannot listen on 192.0.2.1:"),
    ]
    for env, message in cases:
        assert message in one_line(fencekeeper("node", "run", env=env)), env


def test_storage_and_workload_start_up_failures(cluster: cluster_file.Cluster, tmp_path: Path) -> None:
    db = {"FENCEKEEPER_DB_URL": f"sqlite+aiosqlite:///{tmp_path / 's.db'}"}
    quorum = db | {"FENCEKEEPER_TOKEN_VERIFY": "quorum"}
    cases = [
        (["storage", "serve"], quorum, "--token-verify quorum needs --cluster"),
        (
            ["storage", "serve"],
            quorum | {"FENCEKEEPER_CLUSTER": str(tmp_path / "x")},
            "cannot read the cluster",
        ),
        (
            ["storage", "serve"],
            db | {"FENCEKEEPER_LOG_FILE": str(tmp_path / "no/s.log")},
            "cannot write --log",
        ),
        (["workload"], {"FENCEKEEPER_NODES": "n1:7100", "FENCEKEEPER_STORAGE": "http://s"}, "--node must be"),
        (
            ["workload"],
            {"FENCEKEEPER_NODES": "http://n1", "FENCEKEEPER_STORAGE": "s:80"},
            "--storage must be",
        ),
        (["workload"], {"FENCEKEEPER_STORAGE": "http://s"}, "required: --node"),
    ]
    for args, env, message in cases:
        assert message in one_line(fencekeeper(*args, env=env)), (args, env)


def test_cluster_init_with_a_host_template_and_if_missing(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    first = fencekeeper("cluster", "init", "--out", str(out), "--host", "{id}", "--if-missing")
    assert first.returncode == 0, first.stderr
    cluster = cluster_file.load(out / "cluster.toml")
    assert [m.address for m in cluster.members] == ["n1:7100", "n2:7101", "n3:7102"]
    again = fencekeeper("cluster", "init", "--out", str(out), "--if-missing")
    assert again.returncode == 0 and f"kept {out / 'cluster.toml'}" in again.stdout
    assert cluster_file.load(out / "cluster.toml").id == cluster.id  # the keys were not replaced
    (out / "cluster.toml").write_text("members = 1")
    assert "lacks or misnames" in one_line(fencekeeper("cluster", "init", "--out", str(out), "--if-missing"))
