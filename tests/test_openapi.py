"""/openapi.json: a valid OpenAPI 3.1 document that describes exactly the routes the app serves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from openapi_spec_validator import validate

from elector.cluster import init
from storage_service.app import create_app
from storage_service.config import StorageConfig
from storage_service.openapi import openapi_document
from storage_service.problems import TITLES, TYPE_PREFIX
from storage_service.tokens import QuorumVerifier
from tests.conftest import MakeClient

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_document_describes_exactly_the_app_routes() -> None:
    # The app opens its database on startup only, so building it here touches no database.
    app = create_app(StorageConfig(db_url="sqlite+aiosqlite:///unused.db"))
    served = {
        # aiohttp writes a path parameter with its regex ({key:.+}); OpenAPI only names it ({key}).
        (re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical), route.method.lower())
        for route in app.router.routes()
    }
    documented = {
        (path, method)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == served


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_every_problem_type_is_documented_with_its_title() -> None:
    documented = {}
    for node in _walk(openapi_document()):
        problem_type = node.get("properties", {}).get("type", {})
        if isinstance(problem_type, dict) and str(problem_type.get("const", "")).startswith(TYPE_PREFIX):
            documented[problem_type["const"].removeprefix(TYPE_PREFIX)] = node["properties"]["title"]["const"]
    assert documented == TITLES


def test_every_component_is_used_or_a_generic_response() -> None:
    document = openapi_document()
    text = repr(document["paths"]) + repr(document["components"])
    unused = [
        f"{section}/{name}"
        for section, components in document["components"].items()
        for name in components
        if f"'#/components/{section}/{name}'" not in text
    ]
    # 405 and 406 are answered on any path (the router's, not an operation's), so no operation names them.
    assert unused == ["responses/MethodNotAllowed", "responses/NotAcceptable"]


async def test_served_document_is_the_document(client) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert await resp.json() == openapi_document()


async def test_with_quorum_tokens_the_token_is_an_elector_token(make_client: MakeClient, tmp_path) -> None:
    client = await make_client(verifier=QuorumVerifier(init(tmp_path / "cluster", 3)))
    document = await (await client.get("/openapi.json")).json()
    assert document == openapi_document(epoch_tokens=False)
    validate(document)
    token = document["components"]["parameters"]["FencingToken"]["schema"]
    assert token["type"] == "string" and re.fullmatch(token["pattern"][1:-1], "eyJjbHVzdGVyIjoiYyJ9")
