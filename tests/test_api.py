"""API behaviour on both databases: every status the issue names, through the real app and database."""

from __future__ import annotations

import base64

from yarl import URL

from tests.conftest import MakeClient

NS = "/v1/namespaces/orders"


def token(epoch: int, writer: str | None = None) -> dict[str, str]:
    headers = {"Fencing-Token": str(epoch)}
    if writer:
        headers["Fencing-Writer"] = writer
    return headers


async def test_put_then_get_keeps_bytes_content_type_version_and_epoch(client) -> None:
    body = bytes(range(256))
    resp = await client.put(
        f"{NS}/objects/a/b.bin", data=body, headers=token(3) | {"Content-Type": "image/x-test"}
    )
    assert resp.status == 200
    assert await resp.json() == {"namespace": "orders", "key": "a/b.bin", "version": 1, "epoch": 3, "seq": 1}
    assert resp.headers["ETag"] == '"1"'
    resp = await client.get(f"{NS}/objects/a/b.bin")
    assert resp.status == 200
    assert await resp.read() == body
    assert resp.headers["Content-Type"] == "image/x-test"
    assert resp.headers["ETag"] == '"1"'
    assert resp.headers["Fencing-Epoch"] == "3"
    resp = await client.put(f"{NS}/objects/a/b.bin", data=b"x", headers=token(3))
    assert (await resp.json())["version"] == 2


async def test_stale_token_is_409_recorded_and_logged(client, caplog) -> None:
    assert (await client.post(f"{NS}/fence", headers=token(7))).status == 200
    resp = await client.put(f"{NS}/objects/k", data=b"old", headers=token(6, "n2"))
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["type"] == "urn:fencekeeper:problem:stale-token"
    assert (problem["current_epoch"], problem["token_epoch"]) == (7, 6)
    assert (await client.get(f"{NS}/objects/k")).status == 404  # nothing written
    rejected = (await (await client.get(f"{NS}/rejections")).json())["items"]
    assert [(r["key"], r["token_epoch"], r["current_epoch"], r["writer"], r["reason"]) for r in rejected] == [
        ("k", 6, 7, "n2", "stale_epoch")
    ]
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "write_rejected"]
    assert len(logged) == 1
    assert logged[0].fields["token_epoch"] == 6 and logged[0].fields["writer"] == "n2"
    metrics = await (await client.get("/metrics")).text()
    assert 'fencekeeper_storage_writes_rejected_total{reason="stale_epoch"} 1.0' in metrics


async def test_write_with_higher_epoch_raises_the_fence(client) -> None:
    assert (await client.put(f"{NS}/objects/k", data=b"1", headers=token(1))).status == 200
    assert (await client.put(f"{NS}/objects/k", data=b"2", headers=token(4))).status == 200
    info = await (await client.get(NS)).json()
    assert info["fence_epoch"] == 4
    assert (await client.put(f"{NS}/objects/k", data=b"3", headers=token(1))).status == 409


async def test_fence_raise_is_idempotent_and_stale_raise_is_409(client) -> None:
    resp = await client.post(f"{NS}/fence", headers=token(2))
    assert await resp.json() == {"namespace": "orders", "epoch": 2, "previous_epoch": None}
    resp = await client.post(f"{NS}/fence", headers=token(5))
    assert await resp.json() == {"namespace": "orders", "epoch": 5, "previous_epoch": 2}
    resp = await client.post(f"{NS}/fence", headers=token(5))
    assert await resp.json() == {"namespace": "orders", "epoch": 5, "previous_epoch": 5}
    resp = await client.post(f"{NS}/fence", headers=token(4))
    assert resp.status == 409
    assert (await resp.json())["current_epoch"] == 5


async def test_namespaces_are_fenced_independently(client) -> None:
    assert (await client.post(f"{NS}/fence", headers=token(9))).status == 200
    assert (await client.put("/v1/namespaces/billing/objects/k", data=b"", headers=token(1))).status == 200


async def test_missing_and_malformed_tokens(client) -> None:
    resp = await client.put(f"{NS}/objects/k", data=b"x")
    assert resp.status == 401
    assert (await resp.json())["type"] == "urn:fencekeeper:problem:missing-token"
    for bad in ("-1", "abc", "1.5", "9223372036854775808", "0x10", "\N{FULLWIDTH DIGIT ONE}"):
        resp = await client.put(f"{NS}/objects/k", data=b"x", headers={"Fencing-Token": bad})
        assert resp.status == 400, bad
        assert (await resp.json())["type"] == "urn:fencekeeper:problem:malformed-token"
    assert (await client.get(f"{NS}/objects/k")).status == 404


async def test_if_match(client) -> None:
    await client.put(f"{NS}/objects/k", data=b"v1", headers=token(1))
    resp = await client.put(f"{NS}/objects/k", data=b"v2", headers=token(1) | {"If-Match": '"2"'})
    assert resp.status == 412
    assert (await resp.json())["type"] == "urn:fencekeeper:problem:precondition-failed"
    resp = await client.put(f"{NS}/objects/k", data=b"v2", headers=token(1) | {"If-Match": '"1"'})
    assert resp.status == 200 and (await resp.json())["version"] == 2
    resp = await client.put(f"{NS}/objects/new", data=b"v", headers=token(1) | {"If-Match": "*"})
    assert resp.status == 412
    resp = await client.put(f"{NS}/objects/k", data=b"v", headers=token(1) | {"If-Match": 'W/"2"'})
    assert resp.status == 400
    assert (await (await client.get(f"{NS}/objects/k")).read()) == b"v2"


async def test_body_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = await make_client(max_body=1024)
    resp = await client.put(f"{NS}/objects/k", data=b"x" * 1025, headers=token(1))
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"
    assert (await client.put(f"{NS}/objects/k", data=b"x" * 1024, headers=token(1))).status == 200


async def test_bad_names_are_400(client) -> None:
    for path in (
        "/v1/namespaces/-bad/objects/k",
        "/v1/namespaces/" + "n" * 129 + "/objects/k",
        f"{NS}/objects/a//b",
        f"{NS}/objects/a%20b",
        f"{NS}/objects/" + "k" * 513,
    ):
        resp = await client.put(path, data=b"x", headers=token(1))
        assert resp.status == 400, path
        assert (await resp.json())["type"] == "urn:fencekeeper:problem:invalid-name"


async def test_delete_is_fenced_and_keeps_versions_unique(client) -> None:
    await client.put(f"{NS}/objects/k", data=b"v1", headers=token(2))
    assert (await client.delete(f"{NS}/objects/k", headers=token(1))).status == 409
    resp = await client.delete(f"{NS}/objects/k", headers=token(2))
    assert resp.status == 200 and (await resp.json())["version"] == 2
    assert (await client.get(f"{NS}/objects/k")).status == 404
    assert (await client.delete(f"{NS}/objects/k", headers=token(2))).status == 404
    resp = await client.put(f"{NS}/objects/k", data=b"again", headers=token(2))
    assert (await resp.json())["version"] == 3


async def test_batch_is_all_or_nothing(client) -> None:
    await client.put(f"{NS}/objects/a", data=b"a1", headers=token(1))
    ops = {
        "operations": [
            {"op": "put", "key": "b", "value": "b1"},
            {"op": "put", "key": "a", "value": "a2", "if_match": 9},
        ]
    }
    resp = await client.post(f"{NS}/batch", json=ops, headers=token(1))
    assert resp.status == 412 and (await resp.json())["operation"] == 1
    assert (await client.get(f"{NS}/objects/b")).status == 404
    ops = {
        "operations": [
            {"op": "put", "key": "b", "value": base64.b64encode(b"\x00\x01").decode(), "encoding": "base64"},
            {"op": "delete", "key": "a", "if_match": 1},
        ]
    }
    resp = await client.post(f"{NS}/batch", json=ops, headers=token(1))
    assert resp.status == 200
    assert [(r["op"], r["key"], r["version"]) for r in (await resp.json())["results"]] == [
        ("put", "b", 1),
        ("delete", "a", 2),
    ]
    assert await (await client.get(f"{NS}/objects/b")).read() == b"\x00\x01"
    await client.post(f"{NS}/fence", headers=token(3))
    assert (await client.post(f"{NS}/batch", json=ops, headers=token(2))).status == 409


async def test_bad_batches_are_400(client) -> None:
    for body in (
        b"not json",
        b"[]",
        b'{"operations": []}',
        b'{"operations": [{"op": "move", "key": "a"}]}',
        b'{"operations": [{"op": "put", "key": "a"}]}',
        b'{"operations": [{"op": "put", "key": "a", "value": "!", "encoding": "base64"}]}',
        b'{"operations": [{"op": "delete", "key": "a"}, {"op": "delete", "key": "a"}]}',
        b'{"operations": [{"op": "delete", "key": "/a"}]}',
        b'{"operations": [{"op": "delete", "key": "a/../b"}]}',
    ):
        resp = await client.post(f"{NS}/batch", data=body, headers=token(1))
        assert resp.status == 400, body
        assert resp.content_type == "application/problem+json"


async def test_history_lists_accepted_writes_in_order(client) -> None:
    for epoch, value in ((1, b"a"), (1, b"b"), (2, b"c")):
        await client.put(f"{NS}/objects/k", data=value, headers=token(epoch, "w"))
    await client.put(f"{NS}/objects/k", data=b"stale", headers=token(1))
    page = await (await client.get(f"{NS}/history?limit=2&values=true")).json()
    assert [(i["seq"], i["epoch"], i["version"], i["writer"]) for i in page["items"]] == [
        (1, 1, 1, "w"),
        (2, 1, 2, "w"),
    ]
    assert base64.b64decode(page["items"][0]["value_base64"]) == b"a"
    rest = await (await client.get(f"{NS}/history?after={page['next_after']}")).json()
    assert [i["epoch"] for i in rest["items"]] == [2]
    assert "value_base64" not in rest["items"][0]
    for query in ("after=-1", "limit=0", "limit=5000", "after=x", "values=yes"):
        assert (await client.get(f"{NS}/history?{query}")).status == 400, query


async def test_namespace_info_counts(client) -> None:
    await client.put(f"{NS}/objects/a", data=b"1", headers=token(4))
    await client.put(f"{NS}/objects/b", data=b"1", headers=token(4))
    await client.delete(f"{NS}/objects/b", headers=token(4))
    await client.put(f"{NS}/objects/a", data=b"1", headers=token(3))
    info = await (await client.get(NS)).json()
    assert {k: info[k] for k in ("fence_epoch", "objects", "accepted_writes", "rejected_writes")} == {
        "fence_epoch": 4,
        "objects": 1,
        "accepted_writes": 3,
        "rejected_writes": 1,
    }


async def test_fencing_off_accepts_stale_writes_but_records_their_epoch(make_client: MakeClient) -> None:
    client = await make_client(fencing=False)
    await client.post(f"{NS}/fence", headers=token(5))
    resp = await client.put(f"{NS}/objects/k", data=b"x", headers=token(2))
    assert resp.status == 200 and (await resp.json())["epoch"] == 2
    assert (await client.get(f"{NS}/objects/k")).headers["Fencing-Epoch"] == "2"


async def test_operational_endpoints(client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await (await client.get("/readyz")).json()) == {"status": "ready"}
    await client.put(f"{NS}/objects/k", data=b"x", headers=token(3))
    metrics = await (await client.get("/metrics")).text()
    assert 'fencekeeper_storage_writes_accepted_total{op="put"} 1.0' in metrics
    assert 'fencekeeper_storage_fence_epoch{namespace="orders"} 3.0' in metrics
    assert "fencekeeper_storage_request_seconds_bucket" in metrics
    resp = await client.get("/nope")
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    resp = await client.patch(f"{NS}/objects/k", data=b"x")
    assert resp.status == 405 and resp.content_type == "application/problem+json"


# -- regressions found while checking the service against /openapi.json -----------------------------------


async def test_huge_query_integers_are_400_not_500(client) -> None:
    # int() refuses more than 4300 digits; the handler used to call it before bounding the length.
    for path in ("history", "rejections"):
        for query in ("after=" + "1" * 5000, "limit=" + "0" * 30 + "5", "after=" + "9" * 20):
            resp = await client.get(f"{NS}/{path}?{query}")
            assert resp.status == 400, (path, query[:30])
            assert resp.content_type == "application/problem+json"


async def test_batch_if_match_beyond_bigint_is_400_not_500(client) -> None:
    await client.put(f"{NS}/objects/a", data=b"1", headers=token(1))
    for if_match in (2**63, 10**30, 0, -1, True, "1", 1.5):
        ops = {"operations": [{"op": "put", "key": "a", "value": "2", "if_match": if_match}]}
        resp = await client.post(f"{NS}/batch", json=ops, headers=token(1))
        assert resp.status == 400, if_match
        assert (await resp.json())["type"] == "urn:fencekeeper:problem:invalid-request"
    ops = {"operations": [{"op": "delete", "key": "a", "if_match": 2**63 - 1}]}
    assert (await client.post(f"{NS}/batch", json=ops, headers=token(1))).status == 412


async def test_batch_if_match_may_be_an_integral_json_number(client) -> None:
    # JSON (and JSON Schema's "integer") does not tell 1 from 1.0.
    await client.put(f"{NS}/objects/a", data=b"1", headers=token(1))
    ops = b'{"operations": [{"op": "put", "key": "a", "value": "2", "if_match": 1.0}]}'
    resp = await client.post(f"{NS}/batch", data=ops, headers=token(1))
    assert resp.status == 200
    assert (await resp.json())["results"][0]["version"] == 2


async def test_deeply_nested_batch_body_is_400_not_500(client) -> None:
    resp = await client.post(f"{NS}/batch", data=b"[" * 100_000, headers=token(1))
    assert resp.status == 400
    assert (await resp.json())["detail"] == "the body is not valid JSON"


async def test_batch_base64_must_be_canonical(client) -> None:
    # base64.b64decode(validate=True) takes excess padding ("AAAA=", "AA==="); the document says RFC 4648.
    for value in ("AAAA=", "AAAA====", "AA===", "A", "AA", "AA=A"):
        ops = {"operations": [{"op": "put", "key": "a", "value": value, "encoding": "base64"}]}
        resp = await client.post(f"{NS}/batch", json=ops, headers=token(1))
        assert resp.status == 400, value
    ops = {"operations": [{"op": "put", "key": "a", "value": "AA==", "encoding": "base64"}]}
    assert (await client.post(f"{NS}/batch", json=ops, headers=token(1))).status == 200
    assert await (await client.get(f"{NS}/objects/a")).read() == b"\x00"


async def test_keys_with_dot_or_empty_segments_are_400(client) -> None:
    # HTTP clients drop "." segments from a URL path: /objects/a/./b is sent as /objects/a/b, so such a key
    # could be written (percent-encoded, or in a batch) but not read back. "a/" has an empty last segment.
    for encoded in ("%2E", "a/%2E", "a/%2E/b", "%2E/a", "a/", "a/b/"):
        url = URL(f"{client.make_url('/')}{NS[1:]}/objects/{encoded}", encoded=True)  # sent as is
        resp = await client.session.put(url, data=b"x", headers=token(1))
        assert resp.status == 400, encoded
        assert (await resp.json())["type"] == "urn:fencekeeper:problem:invalid-name"
    for key in (".", "a/.", "a/./b", "a/", "./a"):
        ops = {"operations": [{"op": "put", "key": key, "value": "x"}]}
        assert (await client.post(f"{NS}/batch", json=ops, headers=token(1))).status == 400, key
    for key in ("...", ".a", "a/..b", "a.b/c~d_e-f"):
        assert (await client.put(f"{NS}/objects/{key}", data=b"x", headers=token(1))).status == 200, key
    assert (await client.get(f"{NS}/objects/a/..b")).status == 200


async def test_names_the_router_used_to_miss_are_400_not_404(client) -> None:
    # The routes were {ns} (no braces) and {key:.+} (no newline): such a name found no route at all.
    base = str(client.make_url("/"))
    for method, path in (
        ("PUT", "v1/namespaces/orders/objects/a%0Ab"),
        ("GET", "v1/namespaces/orders/objects/%0A"),
        ("GET", "v1/namespaces/%7B%7D"),
        ("GET", "v1/namespaces/a%7Bb/history"),
        ("GET", "v1/namespaces/%7D/rejections"),
        ("POST", "v1/namespaces/%7B/fence"),
        ("PUT", "v1/namespaces/%7B%7D/objects/k"),
    ):
        resp = await client.session.request(method, URL(base + path, encoded=True), headers=token(1))
        assert resp.status == 400, (method, path)
        assert (await resp.json())["type"] == "urn:fencekeeper:problem:invalid-name"


async def test_a_bug_is_a_500_and_a_lost_database_a_503(make_client, monkeypatch) -> None:
    from sqlalchemy.exc import DataError, OperationalError

    from storage_service.store import FencedStore

    client = await make_client()

    async def refused(*_args, **_kwargs):
        raise DataError("INSERT ...", {}, ValueError("value out of range"))

    monkeypatch.setattr(FencedStore, "get", refused)
    resp = await client.get(f"{NS}/objects/k")
    assert resp.status == 500 and (await resp.json())["type"] == "urn:fencekeeper:problem:internal-error"

    async def unreachable(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(FencedStore, "get", unreachable)
    resp = await client.get(f"{NS}/objects/k")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["type"] == "urn:fencekeeper:problem:database-unavailable"
