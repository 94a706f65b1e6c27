"""The counter workload: what a node does while it leads, for the end-to-end tests and the partition lab;
also `fencekeeper workload`, the same loop in a program of its own that takes its tokens from the nodes.

Forever: wait to lead the group; raise the fence of the namespace (= the group) to the lease's epoch and
read the counter behind it (absent = 0), both in one request; then every `interval_ms` write counter + 1,
blindly, with the lease's token.
It behaves as a leader that trusts its exclusivity would: between writes it looks only at `lease.lost`,
never at the clock, so a paused or partitioned leader does write with a dead token when it wakes up, and
the storage's fence is what has to stop it. A refusal (409) ends the lease (`FencedWriter`); the loop
then waits to lead again.

Every write's outcome is one JSON log line: `write_accepted` or `write_rejected`, with the group, epoch,
value and the storage's answer. A storage that is down or failing is logged and retried; it never stops
the node.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from elector._log import log_event
from elector.node.runtime import LeadershipLost, Lease
from elector.writer import FencedWriter, LeaderSource
from storage_service.client import StaleTokenError, StorageClient, StorageError

log = logging.getLogger("elector.workload")

RETRY_S = 0.2  # after a storage error: the node still leads, so try again soon
TRANSIENT = (StorageError, aiohttp.ClientError, TimeoutError, ValueError)


async def run_counter(
    node: LeaderSource,
    group: str,
    storage_url: str,
    *,
    key: str = "counter",
    interval_ms: float = 20,
    timeout_s: float = 5.0,
) -> None:
    """Run until cancelled. Writes carry `Fencing-Writer: <node id>`, so the storage's audit names us."""
    async with StorageClient(storage_url, writer=node.id, timeout=timeout_s) as storage:
        while True:
            lease = await node.wait_for_leadership(group)
            try:
                await _lead(node, lease, storage, key, interval_ms / 1000)
            except LeadershipLost:
                pass  # logged where it happened; wait to lead again
            except TRANSIENT as exc:
                # The outcome of the last write may be unknown: start over from the fence and a fresh read,
                # so the counter neither skips nor repeats a value.
                log_event(
                    log,
                    "workload_error",
                    f"storage error while leading {group} at epoch {lease.epoch}: {exc!r}",
                    logging.WARNING,
                    node=node.id,
                    group=group,
                    epoch=lease.epoch,
                    error=repr(exc),
                )
                await asyncio.sleep(RETRY_S)
            except Exception:
                log.exception(
                    "counter workload failed; retrying", extra={"fields": {"event": "workload_bug"}}
                )
                await asyncio.sleep(RETRY_S)


async def _lead(
    node: LeaderSource, lease: Lease, storage: StorageClient, key: str, interval_s: float
) -> None:
    group = lease.group
    writer = FencedWriter(node, lease, storage)
    fields = {"node": node.id, "group": group, "epoch": lease.epoch, "key": key}
    try:
        fenced = await writer.fence(read=key)
    except LeadershipLost as exc:
        _rejected(fields, "fence", exc)
        raise
    log_event(
        log,
        "fence_raised",
        f"{node.id} raised the fence of {group} to {fenced.epoch} (was {fenced.previous_epoch})",
        **fields,
        previous_epoch=fenced.previous_epoch,
    )
    value = int(fenced.read.data) if fenced.read is not None else 0
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while not lease.lost.is_set():
        value += 1
        try:
            written = await writer.put(key, str(value).encode(), content_type="text/plain")
        except LeadershipLost as exc:
            _rejected(fields | {"value": value}, "put", exc)
            raise
        log_event(
            log,
            "write_accepted",
            f"{node.id} wrote {group}/{key} = {value} at epoch {lease.epoch}",
            **fields,
            value=value,
            seq=written.seq,
            version=written.version,
        )
        # A fixed rate, not a fixed pause: one write per interval however long each takes (no bursts to
        # catch up after a slow one).
        next_at = max(next_at + interval_s, loop.time())
        await asyncio.sleep(next_at - loop.time())
    log_event(
        log, "workload_paused", f"{node.id} lost the lease of {group}: stops writing", logging.DEBUG, **fields
    )


def _rejected(fields: dict, op: str, exc: LeadershipLost) -> None:
    """Log a write the storage refused (not one skipped because the lease was already known lost)."""
    cause = exc.__cause__
    if not isinstance(cause, StaleTokenError):
        return
    log_event(
        log,
        "write_rejected",
        f"{fields['node']}'s {op} at epoch {fields['epoch']} was refused: {exc}",
        logging.WARNING,
        **fields,
        op=op,
        status=cause.status,
        current_epoch=cause.current_epoch,
    )
