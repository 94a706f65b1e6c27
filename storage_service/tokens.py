"""Fencing-token verification: the header value in, a trusted epoch out, or a Problem.

`--token-verify none` trusts a plain integer epoch (for tests, benchmarks and clients behind a trusted
elector). `--token-verify quorum` trusts only an elector token signed by a majority of the cluster's
voters, so a client that makes up a huge epoch cannot lock the real leader out.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from elector.cluster import Cluster
from elector.token import FencingToken, TokenError
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


class QuorumVerifier:
    """Trusts a token only if a majority of the cluster's voters signed it, and only for its own group.

    Verified tokens are cached (a leader sends the same token with every write until its epoch changes),
    so the signature checks run once per token, not once per write.
    """

    def __init__(self, cluster: Cluster, cache_size: int = 4096) -> None:
        self.cluster = cluster
        self._keys = cluster.public_keys()
        self._cache: OrderedDict[str, FencingToken] = OrderedDict()
        self._cache_size = cache_size

    def _trusted(self, raw: str) -> FencingToken:
        token = self._cache.get(raw)
        if token is not None:
            self._cache.move_to_end(raw)
            return token
        try:
            token = FencingToken.decode(raw)
        except TokenError as exc:
            raise Problem(400, "malformed-token", f"Fencing-Token is not an elector token: {exc}") from None
        if token.cluster != self.cluster.id:
            raise Problem(403, "forged-token", f"the token is from cluster {token.cluster!r}, not this one")
        signers = token.valid_signers(self._keys)
        if len(signers) < self.cluster.quorum:
            raise Problem(
                403,
                "forged-token",
                f"the token carries {len(signers)} valid voter signatures; a quorum is {self.cluster.quorum}",
            )
        self._cache[raw] = token
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return token

    def verify(self, raw: str, namespace: str) -> Token:
        token = self._trusted(raw.strip())
        if token.group != namespace:
            raise Problem(
                403, "wrong-namespace", f"the token is for namespace {token.group!r}, not {namespace!r}"
            )
        return Token(token.epoch, token.holder)
