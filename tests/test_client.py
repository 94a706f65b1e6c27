"""The client library against the real app on both databases: typed results and typed errors."""

from __future__ import annotations

import pytest

from storage_service.app import create_app
from storage_service.client import (
    NotFoundError,
    PreconditionFailedError,
    StaleTokenError,
    StorageClient,
    StorageError,
    TokenRefusedError,
    Value,
)
from storage_service.config import StorageConfig


@pytest.fixture
async def storage(db_url, aiohttp_server):
    server = await aiohttp_server(create_app(StorageConfig(db_url=db_url)))
    async with StorageClient(str(server.make_url("")), writer="n1") as client:
        yield client


async def test_fence_put_get_delete_batch_history(storage: StorageClient) -> None:
    fenced = await storage.raise_fence("orders", 4)
    assert (fenced.epoch, fenced.previous_epoch) == (4, None)
    written = await storage.put("orders", "counter", b"41", 4, content_type="text/plain")
    assert (written.version, written.epoch) == (1, 4)
    value = await storage.get("orders", "counter")
    assert value is not None
    assert (value.data, value.content_type, value.version, value.epoch) == (b"41", "text/plain", 1, 4)
    assert await storage.get("orders", "absent") is None
    written = await storage.put("orders", "counter", b"42", 4, if_match=1)
    assert written.version == 2
    results = await storage.batch(
        "orders", [{"op": "put", "key": "a", "value": "x"}, {"op": "delete", "key": "counter"}], 4
    )
    assert [(r.key, r.version) for r in results] == [("a", 1), ("counter", 3)]
    history = await storage.history("orders", values=True)
    assert [(h["key"], h["op"], h["writer"]) for h in history] == [
        ("counter", "put", "n1"),
        ("counter", "put", "n1"),
        ("a", "put", "n1"),
        ("counter", "delete", "n1"),
    ]
    assert (await storage.namespace("orders"))["fence_epoch"] == 4


async def test_a_fence_raised_with_a_read_returns_the_object_behind_it(storage: StorageClient) -> None:
    assert (await storage.raise_fence("orders", 1, read="counter")).read is None
    await storage.put("orders", "counter", b"7", 1, content_type="text/plain")
    fenced = await storage.raise_fence("orders", 2, read="counter")
    assert (fenced.epoch, fenced.previous_epoch) == (2, 1)
    assert fenced.read == Value(b"7", "text/plain", 1, 1)
    with pytest.raises(StaleTokenError):
        await storage.raise_fence("orders", 1, read="counter")


async def test_typed_errors(storage: StorageClient) -> None:
    await storage.raise_fence("orders", 5)
    with pytest.raises(StaleTokenError) as stale:
        await storage.put("orders", "k", b"v", 3)
    assert (stale.value.current_epoch, stale.value.token_epoch) == (5, 3)
    assert stale.value.kind == "stale-token"
    with pytest.raises(TokenRefusedError):
        await storage.put("orders", "k", b"v", "not-an-epoch")
    await storage.put("orders", "k", b"v", 5)
    with pytest.raises(PreconditionFailedError):
        await storage.put("orders", "k", b"v", 5, if_match=7)
    with pytest.raises(NotFoundError):
        await storage.delete("orders", "absent", 5)
    with pytest.raises(StorageError) as bad:
        await storage.put("orders", "/bad", b"v", 5)
    assert bad.value.status == 400
    rejected = await storage.rejections("orders")
    assert [(r["key"], r["token_epoch"], r["current_epoch"], r["writer"]) for r in rejected] == [
        ("k", 3, 5, "n1")
    ]
