"""The fencing token: group, epoch, holder and a majority of voter signatures, in one header value.

Wire form: the unpadded base64url encoding of a JSON object

    {"cluster": "...", "group": "orders", "epoch": 7, "holder": "n2",
     "signatures": {"n1": "<base64url Ed25519 signature>", "n3": "..."}}

so any tool can decode and inspect it. Each voter signs `grant_message(cluster, group, epoch, holder)`
when it grants the epoch; a token is trusted when signatures of a majority of the cluster's voters verify.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_TOKEN_BYTES = 8192


class TokenError(ValueError):
    """The header value is not a well-formed fencing token."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    if not isinstance(text, str) or not text.isascii():
        raise TokenError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("not base64url") from None


def grant_message(cluster: str, group: str, epoch: int, holder: str) -> bytes:
    """The exact bytes a voter signs when it grants `epoch` of `group` to `holder`."""
    return (
        b"fencekeeper-grant\x00" + json.dumps([cluster, group, epoch, holder], separators=(",", ":")).encode()
    )


def sign_grant(key: Ed25519PrivateKey, cluster: str, group: str, epoch: int, holder: str) -> str:
    return b64url(key.sign(grant_message(cluster, group, epoch, holder)))


@dataclass(frozen=True)
class FencingToken:
    cluster: str
    group: str
    epoch: int
    holder: str
    signatures: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        body = {
            "cluster": self.cluster,
            "group": self.group,
            "epoch": self.epoch,
            "holder": self.holder,
            "signatures": dict(sorted(self.signatures.items())),
        }
        return b64url(json.dumps(body, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, raw: str) -> FencingToken:
        if len(raw) > MAX_TOKEN_BYTES:
            raise TokenError("token too long")
        try:
            body: Any = json.loads(unb64url(raw.strip()))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # "[[[[..." nests too deep
            raise TokenError("not base64url JSON") from exc
        if not isinstance(body, dict):
            raise TokenError("not a JSON object")
        cluster, group, epoch = body.get("cluster"), body.get("group"), body.get("epoch")
        holder, signatures = body.get("holder"), body.get("signatures")
        if not (isinstance(cluster, str) and isinstance(group, str) and isinstance(holder, str)):
            raise TokenError("cluster, group and holder must be strings")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**63:
            raise TokenError("epoch must be a non-negative 64-bit integer")
        if not isinstance(signatures, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in signatures.items()
        ):
            raise TokenError("signatures must map voter ids to strings")
        return cls(cluster, group, epoch, holder, signatures)

    def valid_signers(self, public_keys: dict[str, Ed25519PublicKey]) -> set[str]:
        """The voters among `public_keys` whose signature over this grant verifies."""
        message = grant_message(self.cluster, self.group, self.epoch, self.holder)
        valid = set()
        for voter, signature in self.signatures.items():
            key = public_keys.get(voter)
            if key is None:
                continue
            try:
                key.verify(unb64url(signature), message)
            except (InvalidSignature, TokenError):
                continue
            valid.add(voter)
        return valid
