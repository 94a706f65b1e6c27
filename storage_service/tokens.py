"""Fencing-token verification: the header value in, a trusted epoch out, or a Problem.

`--token-verify none` trusts a plain integer epoch (for tests, benchmarks and clients behind a trusted
elector). Quorum-signed tokens come with the elector: they plug in here as another `TokenVerifier`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from storage_service.problems import Problem

MAX_EPOCH = 2**63 - 1  # BIGINT
_EPOCH = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Token:
    epoch: int
    holder: str | None = None


class TokenVerifier(Protocol):
    def verify(self, raw: str, namespace: str) -> Token:
        """Return the token's epoch for `namespace`, or raise Problem (400 malformed, 403 not trusted)."""
        ...


class PlainEpochVerifier:
    """The token is the epoch itself: a non-negative integer."""

    def verify(self, raw: str, namespace: str) -> Token:
        value = raw.strip()
        if not _EPOCH.fullmatch(value) or int(value) > MAX_EPOCH:
            raise Problem(
                400,
                "malformed-token",
                f"Fencing-Token must be a non-negative integer epoch up to {MAX_EPOCH}",
            )
        return Token(int(value))
