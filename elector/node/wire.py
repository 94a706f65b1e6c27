"""Messages on the wire: the core's frozen dataclasses as JSON objects with a `type` field."""

from __future__ import annotations

import dataclasses
from typing import Any

from elector.core import (
    Campaign,
    Grant,
    LeaseEnded,
    Message,
    Refuse,
    RefuseReason,
    Release,
    Renew,
    Renewed,
    TakeOver,
)

_TYPES: dict[str, type] = {
    cls.__name__.lower(): cls
    for cls in (Campaign, Renew, Release, TakeOver, Grant, Renewed, Refuse, LeaseEnded)
}
_FIELD_TYPES = {
    "group": str,
    "epoch": int,
    "candidate": str,
    "round": int,
    "holder": (str, type(None)),
    "successor": (str, type(None)),
}


class WireError(ValueError):
    """A peer sent something that is not a protocol message."""


def encode(message: Message) -> dict[str, Any]:
    body = dataclasses.asdict(message)
    if isinstance(message, Refuse):
        body["reason"] = message.reason.value
    return {"type": type(message).__name__.lower(), **body}


def decode(body: Any) -> Message:
    if not isinstance(body, dict) or body.get("type") not in _TYPES:
        raise WireError(f"unknown message type {body.get('type') if isinstance(body, dict) else body!r}")
    cls = _TYPES[body["type"]]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: v for k, v in body.items() if k != "type"}
    missing = [name for name, f in fields.items() if name not in values and f.default is dataclasses.MISSING]
    if missing or set(values) - set(fields):
        raise WireError(f"{body['type']}: missing {missing} or unknown {sorted(set(values) - set(fields))}")
    for name, value in values.items():
        expected = _FIELD_TYPES.get(name)
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise WireError(f"{body['type']}.{name} has the wrong type")
    if cls is Refuse:
        try:
            values["reason"] = RefuseReason(values["reason"])
        except ValueError:
            raise WireError(f"unknown refusal reason {values['reason']!r}") from None
    try:
        return cls(**values)
    except TypeError as exc:
        raise WireError(str(exc)) from None
