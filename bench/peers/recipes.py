"""The decisions inside the peers' election recipes, kept free of IO so the tests can pin them down.

etcd (the `concurrency.Election` recipe of etcd's Go client, spoken over the v3 JSON gateway): every
candidate puts a key under the election prefix, attached to its lease; the key with the lowest create
revision leads, every other candidate waits for the deletion of the key just ahead of its own; the
leader's create revision is its fencing token, and a fenced write is a transaction that puts only if
the leader's key still exists with that create revision.

ZooKeeper (kazoo's `Election`, which wraps its `Lock`): the lowest ephemeral sequential znode leads;
the znode's czxid (the zxid of the transaction that created it) is the fencing token, and a fenced
write is a multi-op transaction that checks the znode's version, then sets the data.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any


def b64(data: str | bytes) -> str:
    """The gateway's encoding of keys and values (protobuf `bytes` fields travel as base64 in JSON)."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with `prefix` (its last byte plus one)."""
    raw = prefix.encode()
    return b64(raw[:-1] + bytes([raw[-1] + 1]))


def predecessor(kvs: Iterable[Mapping[str, Any]], my_revision: int) -> str | None:
    """The key (base64, as the gateway returns it) a candidate must see deleted before it leads: the one
    with the highest create revision below its own. None: the candidate's key is the oldest, it leads."""
    ahead = [kv for kv in kvs if int(kv["create_revision"]) < my_revision]
    if not ahead:
        return None
    return max(ahead, key=lambda kv: int(kv["create_revision"]))["key"]


def campaign_txn(key: str, value: str, lease: int) -> dict[str, Any]:
    """Put the candidate's key if it is absent (a retried campaign keeps its place in the queue)."""
    return {
        "compare": [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        "success": [{"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}],
        "failure": [{"request_range": {"key": b64(key)}}],
    }


def created_revision(txn_response: Mapping[str, Any]) -> int:
    """The create revision of the candidate's key from `campaign_txn`'s answer: the revision of the put,
    or the revision the key already had."""
    if txn_response.get("succeeded"):
        return int(txn_response["header"]["revision"])
    kv = txn_response["responses"][0]["response_range"]["kvs"][0]
    return int(kv["create_revision"])


def fenced_put_txn(election_key: str, token: int, key: str, value: bytes) -> dict[str, Any]:
    """The fenced write: put `key` only while the election key exists with create revision `token`."""
    return {
        "compare": [
            {"key": b64(election_key), "target": "CREATE", "result": "EQUAL", "create_revision": str(token)}
        ],
        "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
    }


def transaction_ok(results: list[Any]) -> bool:
    """Whether a kazoo transaction committed: it answers one result per operation, and an exception in
    place of each of them when any check failed."""
    return bool(results) and not any(isinstance(r, Exception) for r in results)
