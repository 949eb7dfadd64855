"""The sweep's last step: did every cell run? Failed cells fail the run, after the table and reports exist."""

from __future__ import annotations

import json
import os
from pathlib import Path

from specsweep.atomic import write_json, write_text
from specsweep.records.types import FAILURE_RECORD, CellRecord


class SweepFailed(RuntimeError):
    pass


def check_sweep(bench_files: list[str | Path], status_path: Path, log_path: Path | None = None) -> dict:
    """Write the sweep's status, or raise naming every failed cell.

    A failed cell's bench.json is moved to failure.json first: its record stays for reading, and with the
    Snakemake target gone the next run reruns exactly that cell (and the table and reports after it).
    """
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    failures = []
    for path in map(Path, bench_files):
        record = CellRecord.model_validate_json(path.read_text())
        counts[record.status] += 1
        if record.status == "failed":
            os.replace(path, path.with_name(FAILURE_RECORD))
            tail = "\n".join(f"      {line}" for line in record.server_log_tail[-10:])
            failures.append(f"  - {record.cell_id}: {record.error}\n    last server-log lines:\n{tail}")
    status = {"cells": len(bench_files), **counts}
    message = json.dumps(status)
    if failures:
        message = (
            f"{counts['failed']} of {len(bench_files)} cells failed (the other cells, the table and the reports "
            f"are written; rerunning the workflow reruns only the failed cells):\n" + "\n".join(failures)
        )
    if log_path is not None:
        write_text(Path(log_path), message + "\n")
    if failures:
        raise SweepFailed(message)
    write_json(status_path, status)
    return status


def status_text(status_path: Path) -> str:
    """One line for the end of a run; empty when the run did not reach the status step (e.g. one cell's target)."""
    try:
        status = json.loads(Path(status_path).read_text())
    except FileNotFoundError:
        return ""
    return f"specsweep: {status['cells']} cells: {status['ok']} measured, {status['skipped']} skipped, {status['failed']} failed"
