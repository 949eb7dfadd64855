"""What a W&B logging step did (wandb.json next to a cell, and the sweep's): the run, the mode used, why."""

from __future__ import annotations

from typing import Literal

from specsweep.records.base import Record

Mode = Literal["online", "offline", "disabled"]


class WandbReceipt(Record):
    """What a W&B logging step did; Snakemake's output for it, and what `specsweep report` reads back."""

    run_id: str | None
    name: str
    group: str
    job_type: str
    mode_requested: Mode
    mode_used: Mode | Literal["failed"]
    # Relative to the sweep dir (wandb/offline-run-...): what `wandb sync` takes.
    run_dir: str | None
    content_sha256: str
    warning: str | None = None
    error: str | None = None
    logged_at: str
