"""Typed keys for what the app holds (`app[STORE]`), shared by the app factory and the handlers."""

from __future__ import annotations

from aiohttp import web

from storage_service.config import StorageConfig
from storage_service.metrics import StorageMetrics
from storage_service.store import FencedStore

CONFIG = web.AppKey("config", StorageConfig)
STORE = web.AppKey("store", FencedStore)
METRICS = web.AppKey("metrics", StorageMetrics)
