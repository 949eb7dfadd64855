"""The tidy results table: one row per cell x workload, with acceptance and the manifest keys."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from specsweep.atomic import write_bytes, write_text
from specsweep.records.base import read_record
from specsweep.records.cell import CellRecord, MemoryRecord
from specsweep.records.manifest import Manifest
from specsweep.records.quality import QualityRecord

# Last server-log lines of a failed cell on its table row (the record keeps more).
TABLE_LOG_LINES = 15

MANIFEST_KEYS = [
    "specsweep_version",
    "git_sha",
    "config_hash",
    "image_name",
    "image_key",
    "vllm_version",
    "model_location",
    "model_source_sha256",
    "drafter_model",
    "seed",
    "started_at",
]


# Memory per cell (records.types.MemoryRecord), in GiB where it is a size: the same on every row of the cell.
MEMORY_COLUMNS = ["mem_weights_gib", "mem_drafter_weights_gib", "mem_checkpoint_gib", "mem_model_gib", "mem_kv_cache_gib",
                  "kv_cache_tokens", "kv_cache_max_concurrency", "max_model_len", "mem_peak_rss_gib", "mem_pss_at_end_gib"]  # fmt: skip


def _gib(value: int | None) -> float | None:
    return None if value is None else value / 1024**3


def memory_columns(memory: MemoryRecord | None) -> dict:
    m = memory or MemoryRecord()
    return {
        "mem_weights_gib": _gib(m.weights_disk_bytes),
        "mem_drafter_weights_gib": _gib(m.drafter_weights_disk_bytes),
        "mem_checkpoint_gib": m.checkpoint_gib,
        "mem_model_gib": m.model_memory_gib,
        "mem_kv_cache_gib": m.kv_cache_gib,
        "kv_cache_tokens": m.kv_cache_tokens,
        "kv_cache_max_concurrency": m.kv_cache_max_concurrency,
        "max_model_len": m.max_model_len,
        "mem_peak_rss_gib": _gib(m.peak_rss_bytes),
        "mem_pss_at_end_gib": _gib(m.pss_at_end_bytes),
    }


def _schedule(speculative_config: str | None) -> str | None:
    schedule = json.loads(speculative_config).get("num_speculative_tokens_per_batch_size") if speculative_config else None
    return json.dumps(schedule, separators=(",", ":")) if schedule else None


def _chat_template_kwargs(config: dict) -> str | None:
    kwargs = config.get("serve", {}).get("default_chat_template_kwargs")
    return json.dumps(kwargs, sort_keys=True, separators=(",", ":")) if kwargs is not None else None


def rows_for(cell_dir: Path) -> list[dict]:
    record = read_record(CellRecord, cell_dir / "bench.json")
    manifest = read_record(Manifest, cell_dir / "manifest.json")
    base = {
        "sweep": record.sweep,
        "cell_id": record.cell_id,
        "model": record.model,
        "quant": record.quant,
        "quant_scheme": manifest.quant_scheme,
        "drafter": record.drafter,
        "drafter_kind": record.drafter_kind,
        "k": record.k,
        # A batch-size schedule the cell served ([[lo, hi, k], ...] as JSON): its k is only the largest k.
        "k_schedule": _schedule(record.speculative_config),
        "adaptive_verification": bool(record.speculative_config and json.loads(record.speculative_config).get(
            "enable_adaptive_verification")),
        "status": record.status,
        "skip_reason": record.skip_reason,
        "error": record.error,
        "server_log_tail": "\n".join(record.server_log_tail[-TABLE_LOG_LINES:]) if record.server_log_tail else None,
        "server_startup_s": record.server_startup_s,
        "dtype": record.dtype,
        # Thinking on or off changes what is generated: a column, so no table compares cells across it unawares.
        "chat_template_kwargs": _chat_template_kwargs(manifest.config),
        "cpu_isa": manifest.host_cpu.isa if manifest.host_cpu else None,
        "wna16_kernel_selected": record.wna16_kernel_selected,
        "quant_kernel": record.quant_kernel,
        **memory_columns(record.memory),
        **{key: getattr(manifest, key) for key in MANIFEST_KEYS},
    }
    if record.status != "ok":
        return [{**base, "workload": None, "concurrency": None}]
    rows = []
    for workload in record.workloads:
        row, spec = workload.row, workload.row.acceptance
        figures = {
            "workload": workload.workload,
            "concurrency": workload.concurrency,
            "n_requests": row.errors.total,
            "n_failed": row.errors.failed,
            "completion_tokens": sum(r.completion_tokens for r in workload.requests if r.ok),
            "prompt_tokens": row.prompt_size,
        }
        for name, metric in [  # the names in FIGURE_COLUMNS
            ("tg_tps", row.tg_throughput),
            ("tg_req_tps", row.tg_req_throughput),
            ("pp_tps", row.pp_throughput),
            ("peak_tps", row.peak_throughput),
            ("ttfr_ms", row.ttfr),
            ("est_ppt_ms", row.est_ppt),
            ("e2e_ttft_ms", row.e2e_ttft),
        ]:
            figures[f"{name}_mean"] = metric.mean if metric else None
            figures[f"{name}_std"] = metric.std if metric else None
        figures.update(
            {
                "drafts": spec.drafts if spec else 0,
                "draft_tokens": spec.draft_tokens if spec else 0,
                "accepted_tokens": spec.accepted if spec else 0,
                "acceptance_rate": spec.acceptance_rate if spec else None,
                "mean_acceptance_length": spec.mean_acceptance_length if spec else None,
                "token_source": ",".join(row.token_count_source),
            }
        )
        for position, rate in enumerate(spec.per_position if spec else []):
            figures[f"acceptance_pos_{position + 1}"] = rate
        rows.append({**base, **figures})
    return rows


QUALITY_COLUMNS = ["ppl", "kld", "ppl_recovery_pct"]
# Every measured row has these; a table of cells that all failed or were skipped gets them empty, so the reports
# say "nothing measured" instead of failing on a missing column.
FIGURE_COLUMNS = [
    "n_requests", "n_failed", "completion_tokens", "prompt_tokens",
    *(f"{name}_{stat}" for name in ("tg_tps", "tg_req_tps", "pp_tps", "peak_tps", "ttfr_ms", "est_ppt_ms", "e2e_ttft_ms")
      for stat in ("mean", "std")),
    "drafts", "draft_tokens", "accepted_tokens", "acceptance_rate", "mean_acceptance_length", "token_source",
]  # fmt: skip


def quality_table(records: list[Path]) -> pd.DataFrame:
    """One row per (model, quant): the quality stage's records as a table."""
    rows = [read_record(QualityRecord, path).model_dump() for path in records]
    columns = list(QualityRecord.model_fields)
    return pd.DataFrame(rows, columns=columns).sort_values(["model", "quant"]).reset_index(drop=True)


# Per-cell eval figures repeated on every row of the cell (the evals table has them once per cell).
CELL_EVAL_COLUMNS = ["lossless_match_pct", "lossless_detail", "endpoint_ppl", "endpoint_kld_topk",
                     "endpoint_ppl_recovery_pct", "endpoint_top1_agreement", "served_checkpoint_check"]  # fmt: skip


def build_table(cell_dirs: list[Path], quality: pd.DataFrame | None = None, evals: pd.DataFrame | None = None,
                this_run: set[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """`this_run`: the cells the run measured (default: all); the others were kept from earlier runs of the sweep."""
    rows = [row for cell_dir in cell_dirs for row in rows_for(cell_dir)]
    table = pd.DataFrame(rows)
    if "cell_id" in table:
        table["this_run"] = table["cell_id"].isin(this_run) if this_run is not None else True
    for column in FIGURE_COLUMNS:
        if column not in table.columns:
            table[column] = None
    if quality is not None and not quality.empty:
        # Quality is per quant: the same figures sit on every row of that quant, next to its throughput.
        table = table.merge(quality[["model", "quant", *QUALITY_COLUMNS]], on=["model", "quant"], how="left")
    if evals is not None and not evals.empty:
        lm_eval = [c for c in evals.columns if c.startswith("lm_eval_") and c != "lm_eval_wall_s"]
        table = table.merge(evals[["cell_id", *CELL_EVAL_COLUMNS, *lm_eval]], on="cell_id", how="left")
    position_columns = sorted(
        (c for c in table.columns if c.startswith("acceptance_pos_")), key=lambda c: int(c.rsplit("_", 1)[1])
    )
    other = [c for c in table.columns if not c.startswith("acceptance_pos_")]
    table = table[other + position_columns]
    table["k"] = table["k"].astype("Int64")
    return table.sort_values(["cell_id", "workload", "concurrency"], na_position="first").reset_index(drop=True)


def write_table(table: pd.DataFrame, csv_path: Path, parquet_path: Path) -> None:
    write_text(csv_path, table.to_csv(index=False))
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    write_bytes(parquet_path, buffer.getvalue())
