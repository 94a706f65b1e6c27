"""schemathesis against a real server process: no 5xx, and no answer that contradicts /openapi.json.

The server runs as `fencekeeper storage serve` (as deployed), on SQLite and on a fresh PostgreSQL database.
The schemathesis CLI reads the document from the live /openapi.json and runs its phases (coverage cases;
up to MAX_EXAMPLES generated valid and invalid requests per operation; short sequences along the
document's links) with `--checks all` (schemathesis 4's default set, named so that no schemathesis.toml
can narrow it: not_a_server_error; status code, content type, response header and response schema
conformance; negative/positive data, missing header, unsupported method and resource checks), a fixed
seed and one worker, so that a failure reproduces: the report prints a curl command for each one.

The CLI rather than `schemathesis.pytest.from_fixture`: that loader breaks on pytest 9 (it sets
`Node._nodeid`, which pytest 9 dropped), and a schema loaded at import time cannot reach a server that a
fixture starts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis

from tests.conftest import PostgresDatabases, _need_postgres

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 25
SEED = 20240607

CONFIG = """
[generation]
# HTTP servers ignore headers and query parameters they do not know, and OpenAPI cannot declare a
# request's headers closed: an unknown X-Whatever is not an invalid request.
allow-extra-parameters = false

[checks.positive_data_acceptance]
# A well-formed write may meet a precondition that does not hold (If-Match): 412 answers it, like 404/409.
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "429"]

# Sequences that follow the document's links (PUT, then GET or DELETE the same object): fewer, shorter.
[phases.stateful]
max-steps = 6

[phases.stateful.generation]
max-examples = 5
"""

pytestmark = pytest.mark.slow


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """A valid batch names each key at most once, which JSON Schema cannot say: drop repeats from valid ones.

    Loaded into the CLI with SCHEMATHESIS_HOOKS=tests.test_schemathesis.
    """
    operations = case.body.get("operations") if isinstance(case.body, dict) else None
    if (
        case.operation.path == "/v1/namespaces/{ns}/batch"
        and case.meta is not None
        and case.meta.generation.mode.is_positive
        and isinstance(operations, list)
    ):
        keys: set[str] = set()
        kept = []
        for operation in operations:
            key = operation.get("key") if isinstance(operation, dict) else None
            if not isinstance(key, str) or key not in keys:
                kept.append(operation)
            if isinstance(key, str):
                keys.add(key)
        case.body = {**case.body, "operations": kept}
    return case


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`fencekeeper storage serve` on a fresh database and a free port; its base URL."""
    databases = None
    if request.param == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'fencekeeper.db'}"
    else:
        _need_postgres()
        databases = PostgresDatabases()
        db_url = asyncio.run(databases.create())
    port = _free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "fencekeeper", "storage", "serve", "--db", db_url]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-file", str(log)]
    with (tmp_path / "server.stderr").open("wb") as stderr:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "server.stderr").read_text()
            assert time.monotonic() < deadline, "the server did not answer /healthz within 30 s"
            try:
                if requests.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield base_url
    finally:
        _stop(server)
        if log.exists():  # shown with a failure: the traceback of a 500 is here
            request.node.add_report_section("teardown", "server log", log.read_text()[-20000:])
        if databases is not None:
            asyncio.run(databases.drop_all())


def test_the_service_keeps_its_openapi_contract(live_server: str, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run"]
    command += [f"{live_server}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES)]
    command += ["--seed", str(SEED), "--workers", "1", "--generation-database", "none"]
    command += ["--output-sanitize", "false"]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "tests.test_schemathesis",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-5000:]
