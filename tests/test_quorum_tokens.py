"""`--token-verify quorum`: only tokens signed by a majority of the cluster's voters open the fence."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elector.cluster import Cluster, init
from elector.token import FencingToken, sign_grant
from storage_service.tokens import QuorumVerifier


@pytest.fixture
def cluster(tmp_path) -> Cluster:
    return init(tmp_path / "cluster", 3)


def signed(cluster: Cluster, group: str, epoch: int, holder: str, voters: list[str]) -> FencingToken:
    return FencingToken(
        cluster.id,
        group,
        epoch,
        holder,
        {v: sign_grant(cluster.private_key(v), cluster.id, group, epoch, holder) for v in voters},
    )


@pytest.fixture
async def client(make_client, cluster: Cluster):
    return await make_client(verifier=QuorumVerifier(cluster))


def header(token: FencingToken | str) -> dict[str, str]:
    return {"Fencing-Token": token if isinstance(token, str) else token.encode()}


async def test_a_majority_signed_token_writes_and_fences(client, cluster: Cluster) -> None:
    token = signed(cluster, "orders", 7, "n2", ["n1", "n3"])
    assert (await client.post("/v1/namespaces/orders/fence", headers=header(token))).status == 200
    resp = await client.put("/v1/namespaces/orders/objects/k", data=b"v", headers=header(token))
    assert resp.status == 200 and (await resp.json())["epoch"] == 7
    older = signed(cluster, "orders", 6, "n1", ["n1", "n2", "n3"])
    assert (
        await client.put("/v1/namespaces/orders/objects/k", data=b"x", headers=header(older))
    ).status == 409


@pytest.mark.parametrize(
    "forgery",
    ["one_signature", "unknown_key", "epoch_raised_after_signing", "other_cluster", "duplicated_signer"],
)
async def test_forged_tokens_are_403_and_recorded(client, cluster: Cluster, forgery: str) -> None:
    good = signed(cluster, "orders", 5, "n2", ["n1", "n2"])
    if forgery == "one_signature":
        token = signed(cluster, "orders", 5, "n2", ["n1"])
    elif forgery == "unknown_key":
        rogue = Ed25519PrivateKey.generate()
        token = dataclasses.replace(
            good,
            signatures={"n1": good.signatures["n1"], "n3": sign_grant(rogue, cluster.id, "orders", 5, "n2")},
        )
    elif forgery == "epoch_raised_after_signing":
        token = dataclasses.replace(good, epoch=10**12)
    elif forgery == "other_cluster":
        token = dataclasses.replace(good, cluster="c-elsewhere")
    else:  # the same signature listed under two voters' names
        token = dataclasses.replace(
            good, signatures={"n1": good.signatures["n1"], "n3": good.signatures["n1"]}
        )
    resp = await client.put("/v1/namespaces/orders/objects/k", data=b"v", headers=header(token))
    assert resp.status == 403
    assert (await resp.json())["type"] == "urn:fencekeeper:problem:forged-token"
    assert (await client.get("/v1/namespaces/orders/objects/k")).status == 404
    info = await (await client.get("/v1/namespaces/orders")).json()
    assert info["fence_epoch"] is None  # a forged huge epoch must not lock the real leader out
    rejected = (await (await client.get("/v1/namespaces/orders/rejections")).json())["items"]
    assert [r["reason"] for r in rejected] == ["forged_token"]


async def test_a_token_only_opens_its_own_namespace(client, cluster: Cluster) -> None:
    token = signed(cluster, "orders", 3, "n1", ["n1", "n2"])
    resp = await client.put("/v1/namespaces/billing/objects/k", data=b"v", headers=header(token))
    assert resp.status == 403
    assert (await resp.json())["type"] == "urn:fencekeeper:problem:wrong-namespace"


NESTED = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")  # once a 500 (RecursionError)


@pytest.mark.parametrize("raw", ["7", "not base64!", "bnVsbA", "eyJlcG9jaCI6IDF9", NESTED])
async def test_malformed_tokens_are_400(client, raw: str) -> None:
    resp = await client.put("/v1/namespaces/orders/objects/k", data=b"v", headers=header(raw))
    assert resp.status == 400
    assert (await resp.json())["type"] == "urn:fencekeeper:problem:malformed-token"


def test_token_round_trips_and_is_inspectable(cluster: Cluster) -> None:
    import base64
    import json

    token = signed(cluster, "orders", 9, "n3", ["n2", "n3"])
    raw = token.encode()
    assert "=" not in raw and "+" not in raw and "/" not in raw
    body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    assert {k: body[k] for k in ("cluster", "group", "epoch", "holder")} == {
        "cluster": cluster.id,
        "group": "orders",
        "epoch": 9,
        "holder": "n3",
    }
    assert FencingToken.decode(raw) == token
    assert token.valid_signers(cluster.public_keys()) == {"n2", "n3"}
