"""The sweep's last step: did every cell run? Failed cells fail the run, after the table and reports exist."""

from __future__ import annotations

import os
from pathlib import Path

from specsweep.atomic import write_json, write_text
from specsweep.records.base import Record, read_record
from specsweep.records.cell import FAILURE_RECORD, CellRecord


class SweepFailed(RuntimeError):
    pass


class SweepStatus(Record):
    """The sweep's last step's record (status.json): how many cells measured, were skipped, failed."""

    cells: int
    ok: int
    skipped: int
    failed: int


def check_sweep(bench_files: list[str | Path], status_path: Path, log_path: Path | None = None) -> SweepStatus:
    """Write the sweep's status, or raise naming every failed cell.

    A failed cell's bench.json is moved to failure.json first: its record stays for reading, and with the
    Snakemake target gone the next run reruns exactly that cell (and the table and reports after it).
    """
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    failures = []
    for path in map(Path, bench_files):
        record = read_record(CellRecord, path)
        counts[record.status] += 1
        if record.status == "failed":
            os.replace(path, path.with_name(FAILURE_RECORD))
            tail = "\n".join(f"      {line}" for line in record.server_log_tail[-10:])
            failures.append(f"  - {record.cell_id}: {record.error}\n    last server-log lines:\n{tail}")
    status = SweepStatus(cells=len(bench_files), **counts)
    message = status.model_dump_json()
    if failures:
        message = (
            f"{counts['failed']} of {len(bench_files)} cells failed (the other cells, the table and the reports "
            f"are written; rerunning the workflow reruns only the failed cells):\n" + "\n".join(failures)
        )
    if log_path is not None:
        write_text(Path(log_path), message + "\n")
    if failures:
        raise SweepFailed(message)
    write_json(status_path, status.model_dump())
    return status


def status_text(status_path: Path) -> str:
    """One line for the end of a run; empty when the run did not reach the status step (e.g. one cell's target)."""
    if not Path(status_path).is_file():
        return ""
    status = read_record(SweepStatus, status_path)
    return f"specsweep: {status.cells} cells: {status.ok} measured, {status.skipped} skipped, {status.failed} failed"
