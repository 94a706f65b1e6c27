"""The cluster file (`cluster.toml`): members, their addresses and public keys, and the lease settings.

Written by `fencekeeper cluster init`, read by every node and by a storage service that verifies tokens
(`--token-verify quorum --cluster FILE`). Each member's private key is a PEM file beside it.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from elector.token import b64url, unb64url


class ClusterFileError(ValueError):
    """The cluster file is missing, unreadable or inconsistent; the message names what is wrong."""


@dataclass(frozen=True)
class Timing:
    """Lease settings, in milliseconds. The candidate trusts a lease for lease × (1 − max_drift) − margin."""

    lease_ms: int = 2000
    renew_ms: int = 500
    request_timeout_ms: int = 250
    max_drift: float = 0.01
    margin_ms: int = 20

    @classmethod
    def for_lease(cls, lease_ms: int) -> Timing:
        """Defaults scaled to a lease: renew every lease/4, requests time out within lease/8 (≤ 250 ms)."""
        return cls(
            lease_ms=lease_ms,
            renew_ms=max(1, lease_ms // 4),
            request_timeout_ms=max(1, min(250, lease_ms // 8)),
            margin_ms=min(20, lease_ms // 25),
        )

    def check(self) -> None:
        if not 50 <= self.lease_ms <= 600_000:
            raise ClusterFileError("lease_ms must be between 50 and 600000")
        if not 0 < self.renew_ms <= self.lease_ms // 2:
            raise ClusterFileError("renew_ms must be positive and at most lease_ms / 2")
        if not 0 < self.request_timeout_ms < self.lease_ms:
            raise ClusterFileError("request_timeout_ms must be positive and below lease_ms")
        if not 0 <= self.max_drift < 0.5:
            raise ClusterFileError("max_drift must be in [0, 0.5)")
        if not 0 <= self.margin_ms < self.lease_ms * (1 - self.max_drift) - self.renew_ms:
            raise ClusterFileError("margin_ms leaves no time to renew the lease")


@dataclass(frozen=True)
class Member:
    id: str
    address: str  # host:port of the node's HTTP API
    public_key: str  # base64url raw Ed25519 public key
    key_file: str | None = None  # private key, relative to the cluster file

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def verifying_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(unb64url(self.public_key))


@dataclass(frozen=True)
class Cluster:
    id: str
    members: tuple[Member, ...]
    timing: Timing = field(default_factory=Timing)
    path: Path | None = None

    @property
    def quorum(self) -> int:
        return len(self.members) // 2 + 1

    def member(self, member_id: str) -> Member:
        for member in self.members:
            if member.id == member_id:
                return member
        raise ClusterFileError(f"no member {member_id!r} in the cluster (members: {self.member_ids()})")

    def member_ids(self) -> str:
        return ", ".join(m.id for m in self.members)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {m.id: m.verifying_key() for m in self.members}

    def private_key(self, member_id: str) -> Ed25519PrivateKey:
        member = self.member(member_id)
        if member.key_file is None or self.path is None:
            raise ClusterFileError(f"member {member_id} has no key_file")
        key_path = self.path.parent / member.key_file
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ClusterFileError(f"cannot read the private key {key_path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ClusterFileError(f"{key_path} is not an Ed25519 private key")
        return key


def load(path: str | Path) -> Cluster:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ClusterFileError(f"cannot read the cluster file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClusterFileError(f"the cluster file {path} is not valid TOML: {exc}") from None
    try:
        timing = Timing(**data.get("timing", {}))
        members = tuple(Member(**m) for m in data["members"])
        cluster = Cluster(str(data["cluster"]), members, timing, path)
    except (KeyError, TypeError) as exc:
        raise ClusterFileError(f"the cluster file {path} lacks or misnames a setting: {exc}") from None
    timing.check()
    ids = [m.id for m in members]
    if len(set(ids)) != len(ids) or not members:
        raise ClusterFileError(f"the cluster file {path} must list members with distinct ids")
    for member in members:
        try:
            member.verifying_key()
        except (ValueError, TypeError) as exc:
            raise ClusterFileError(f"member {member.id} has an invalid public_key: {exc}") from None
    return cluster


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable ASCII is a valid TOML basic string


def init(
    out_dir: str | Path,
    nodes: int,
    *,
    host: str = "127.0.0.1",
    base_port: int = 7100,
    timing: Timing | None = None,
) -> Cluster:
    """Write `out_dir/cluster.toml` and one private key file per member (mode 0600).

    `{id}` in `host` becomes each member's id: in a container network each member's address is then its
    service name (`n1:7100`, `n2:7101`, ...), while on one machine all share 127.0.0.1.
    """
    if not 1 <= nodes <= 9:
        raise ClusterFileError("--nodes must be between 1 and 9")
    timing = timing or Timing()
    timing.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cluster_id = f"c-{secrets.token_hex(8)}"
    members = []
    for i in range(1, nodes + 1):
        key = Ed25519PrivateKey.generate()
        key_file = f"n{i}.key"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(out / key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        member_id = f"n{i}"
        address = f"{host.replace('{id}', member_id)}:{base_port + i - 1}"
        members.append(Member(member_id, address, b64url(public), key_file))
    lines = [
        "# fencekeeper cluster file: written by `fencekeeper cluster init`; copy it to every node.",
        f"cluster = {_toml_str(cluster_id)}",
        "",
        "[timing]",
        f"lease_ms = {timing.lease_ms}",
        f"renew_ms = {timing.renew_ms}",
        f"request_timeout_ms = {timing.request_timeout_ms}",
        f"max_drift = {timing.max_drift}",
        f"margin_ms = {timing.margin_ms}",
    ]
    for member in members:
        lines += [
            "",
            "[[members]]",
            f"id = {_toml_str(member.id)}",
            f"address = {_toml_str(member.address)}",
            f"public_key = {_toml_str(member.public_key)}",
            f"key_file = {_toml_str(member.key_file or '')}",
        ]
    path = out / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return load(path)
