"""`fencekeeper demo`: a scripted walkthrough of fencing against a real storage service process.

Until the elector lands, the two leaders are scripted: leader A holds epoch 1, pauses (as in a long GC),
leader B is elected with epoch 2 and raises the fence, then A wakes up and writes with its old token.
The storage service refuses that write, records it and logs it; the counter keeps B's value.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fencekeeper.processes import StorageProcess
from storage_service.client import StaleTokenError, StorageClient

NS = "orders"


async def run_demo() -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="fencekeeper-demo-") as tmp:
        db = Path(tmp) / "storage.db"
        log = Path(tmp) / "storage.log"
        async with StorageProcess(f"sqlite+aiosqlite:///{db}", log) as storage:
            console.print(f"[bold]storage service[/] {storage.url} on SQLite ({db.name}), fencing on\n")
            await _walkthrough(console, storage.url)
            rejected = [line for line in log.read_text().splitlines() if '"write_rejected"' in line]
        console.print("\n[bold]The storage log[/] (JSON lines; grep write_rejected):")
        for line in rejected:
            console.print(line, markup=False, highlight=False)
        entry = json.loads(rejected[-1]) if rejected else {}
        ok = entry.get("token_epoch") == 1 and entry.get("current_epoch") == 2
    console.print(
        "\n[bold green]verdict: the stale write was refused; the counter is intact.[/]"
        if ok
        else "\n[bold red]verdict: the stale write was NOT refused[/]"
    )
    return 0 if ok else 1


async def _walkthrough(console: Console, url: str) -> None:
    async with StorageClient(url, writer="leader-A") as a, StorageClient(url, writer="leader-B") as b:
        steps = Table("step", "who", "request", "answer", title="Two leaders, one fence", show_lines=False)

        fenced = await a.raise_fence(NS, 1)
        steps.add_row("1", "A (epoch 1)", "POST fence", f"200 fence at {fenced.epoch}")
        written = await a.put(NS, "counter", b"1", 1)
        steps.add_row("2", "A (epoch 1)", "PUT counter = 1", f"200 version {written.version}")
        steps.add_row("3", "A", "[italic]pauses (GC, VM stall); its lease runs out[/]", "")
        fenced = await b.raise_fence(NS, 2)
        steps.add_row(
            "4", "B (epoch 2)", "POST fence", f"200 fence {fenced.previous_epoch} -> {fenced.epoch}"
        )
        current = await b.get(NS, "counter")
        value = int(current.data) + 1 if current else 1
        written = await b.put(NS, "counter", str(value).encode(), 2)
        steps.add_row("5", "B (epoch 2)", f"PUT counter = {value}", f"200 version {written.version}")
        try:
            await a.put(NS, "counter", b"2", 1)
            steps.add_row("6", "A (epoch 1)", "PUT counter = 2 (stale)", "[red]200 accepted[/]")
        except StaleTokenError as exc:
            answer = f"[green]409 stale: fence {exc.current_epoch} > token {exc.token_epoch}[/]"
            steps.add_row("6", "A (epoch 1)", "PUT counter = 2 (stale)", answer)
        final = await b.get(NS, "counter")
        steps.add_row(
            "7",
            "anyone",
            "GET counter",
            f"{final.data.decode() if final else '-'} (epoch {final.epoch if final else '-'})",
        )
        console.print(steps)
        rejected = await b.rejections(NS)
        console.print(
            f"GET /v1/namespaces/{NS}/rejections -> "
            + ", ".join(
                f"{r['writer']} token {r['token_epoch']} < fence {r['current_epoch']}" for r in rejected
            )
        )
