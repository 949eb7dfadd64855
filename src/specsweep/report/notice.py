"""The end-of-sweep lines about reports, with the W&B fallback warning said once, not once per job."""

from __future__ import annotations

from pathlib import Path

from specsweep.records.base import RecordError, read_record
from specsweep.records.status import status_text
from specsweep.records.wandb import WandbReceipt


def report_notice(sweep_dir: str | Path) -> str:
    sweep_dir = Path(sweep_dir)
    lines = [f"specsweep: report at {sweep_dir}/report.html, forum tables at {sweep_dir}/tables.md"]
    receipts = []
    for path in sorted(sweep_dir.glob("*/wandb.json")) + [sweep_dir / "wandb.json"]:
        try:
            receipts.append(read_record(WandbReceipt, path))
        except RecordError:
            continue
    if not receipts:
        return "\n".join(lines)
    used = sorted({r.mode_used for r in receipts})
    lines.append(f"specsweep: W&B: {len(receipts)} runs ({', '.join(used)}); report spec at {sweep_dir}/wandb_report.json")
    warnings = sorted({r.warning for r in receipts if r.warning})
    errors = sorted({r.error for r in receipts if r.error})
    if warnings:
        lines.append(f"specsweep: WARNING: {warnings[0]}")
    if errors:
        lines.append(f"specsweep: WARNING: W&B logging failed for some runs (results unaffected): {errors[0]}")
    if "offline" in used:
        # Absolute: a path to paste into `wandb sync` from wherever the user's shell is.
        lines.append(f"specsweep: push offline runs with: wandb sync {sweep_dir.resolve()}/wandb/offline-run-*")
    return "\n".join(lines)


def run_notice(sweep_dir: str | Path, run_started: float) -> str:
    """The end of a run: where the table and reports are when this run rebuilt them, or that it measured cells only
    (`specsweep run`, a cell's target) and how to rebuild them."""
    sweep_dir = Path(sweep_dir)
    table = sweep_dir / "table.csv"
    if table.is_file() and table.stat().st_mtime >= run_started:
        lines = [f"specsweep: results table at {table} (and table.parquet)", report_notice(sweep_dir)]
        if (status := status_text(sweep_dir / "status.json")):
            lines.append(status)
        return "\n".join(lines)
    return (f"specsweep: this run measured cells only; the table and reports under {sweep_dir}/ were not rebuilt "
            "(`snakemake` with the same --config rebuilds them from every measured cell of the sweep)")
