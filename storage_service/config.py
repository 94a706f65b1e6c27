"""Settings of one storage service process."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage_service.db import DEFAULT_DB_URL
from storage_service.tokens import PlainEpochVerifier, TokenVerifier

DEFAULT_MAX_BODY = 1024 * 1024


@dataclass
class StorageConfig:
    db_url: str = DEFAULT_DB_URL
    fencing: bool = True
    migrate: bool = True
    max_body: int = DEFAULT_MAX_BODY
    pool_size: int = 20
    verifier: TokenVerifier = field(default_factory=PlainEpochVerifier)
