"""Cells on the console while a sweep runs: i of N as each starts and ends, its headline t/s, the time it took and an
estimate of what is left.

Snakemake's console shows its job lines only, and a cell's minutes go to the cell's log file. The run's main process
counts the cell jobs it scheduled (the Snakefile's onstart); each run_cell job reports its start and end here, and
`run:` blocks print to Snakemake's console, beside its own lines. The counts live in one small file, locked while it
is updated, so cells that run at the same time (a cluster executor) count right.
"""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from specsweep.atomic import write_text
from specsweep.records.base import RecordError, read_record
from specsweep.records.cell import CellRecord

STATE = Path("results/_logs/progress.json")


def begin(total: int, state: Path = STATE) -> None:
    """A new run: `total` cell jobs scheduled."""
    state.parent.mkdir(parents=True, exist_ok=True)
    write_text(state, json.dumps({"total": total, "started": 0, "finished": 0, "cell_seconds": []}))


@contextmanager
def _locked(state: Path) -> Iterator[dict]:
    state.parent.mkdir(parents=True, exist_ok=True)
    with open(state.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            counts = json.loads(state.read_text())
        except (OSError, ValueError):
            counts = {"total": None, "started": 0, "finished": 0, "cell_seconds": []}
        yield counts
        write_text(state, json.dumps(counts))


def _of(index: int, total: int | None) -> str:
    return f"cell {index} of {total}" if total else f"cell {index}"


def headline(record: CellRecord) -> str:
    """What the cell ended as: its first workload's tg t/s at its lowest concurrency, or why there is none."""
    if record.status == "skipped":
        return f"skipped ({record.skip_reason})"
    if record.status == "failed":
        return f"FAILED ({(record.error or '').splitlines()[0][:160] if record.error else 'see its log'})"
    rows = sorted((w for w in record.workloads if w.row.tg_throughput), key=lambda w: w.concurrency)
    if not rows:
        return "ok"
    first = rows[0]
    return f"ok, tg {first.row.tg_throughput.mean:.1f} t/s ({first.workload}, c{first.concurrency})"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


@contextmanager
def cell_progress(cell_id: str, bench: str, log: str, state: Path = STATE) -> Iterator[None]:
    """Around one run_cell job: a line as it starts, a line as it ends (also when it fails)."""
    with _locked(state) as counts:
        counts["started"] += 1
        index, total = counts["started"], counts["total"]
    print(f"specsweep: {_of(index, total)} starting: {cell_id} (watch: tail -f {log})", flush=True)
    started = time.monotonic()
    try:
        yield
    finally:
        seconds = time.monotonic() - started
        with _locked(state) as counts:
            counts["finished"] += 1
            counts["cell_seconds"].append(seconds)
            finished, total, durations = counts["finished"], counts["total"], list(counts["cell_seconds"])
        try:
            outcome = headline(read_record(CellRecord, Path(bench)))
        except RecordError:
            outcome = f"FAILED (no record; see {log})"
        left = ""
        if total and total > finished:
            remaining = (total - finished) * sum(durations) / len(durations)
            left = f"; {total - finished} left, about {_duration(remaining)}"
        print(f"specsweep: {_of(index, total)} done in {_duration(seconds)}: {cell_id} {outcome}{left}", flush=True)
