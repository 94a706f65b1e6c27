"""Structured log lines: the message for humans, `fields` (with `event`) for machines and the lab."""

from __future__ import annotations

import logging
from typing import Any


def log_event(logger: logging.Logger, event: str, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": {"event": event, **fields}})
