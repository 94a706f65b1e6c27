"""Protocol messages on the wire: what the core sends comes out the same at the other node."""

from __future__ import annotations

import json

import pytest

from elector.core import LeaseEnded, Release, TakeOver
from elector.node import wire


@pytest.mark.parametrize(
    "message",
    [
        TakeOver("g", 7, "n1"),
        Release("g", 7, "n1", successor="n2"),
        Release("g", 7, "n1", abandoned=True),
        LeaseEnded("g", 7, "n3", "n1", successor="n2"),
    ],
)
def test_a_handover_crosses_the_wire_unchanged(message: TakeOver | Release | LeaseEnded) -> None:
    assert wire.decode(json.loads(json.dumps(wire.encode(message)))) == message


def test_a_successor_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(wire.WireError):
        wire.decode({"type": "release", "group": "g", "epoch": 7, "holder": "n1", "successor": 2})
