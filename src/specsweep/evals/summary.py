"""The evals table: one row per cell with its quality figures, next to the same manifest keys as throughput rows.

Every figure that needs two cells is made here, where all cells of the sweep are known: losslessness (a drafter
cell vs its quant's no-drafter cell), endpoint PPL/KLD (a quant's no-drafter cell vs the base quant's), lm-eval
recovery (a quant's score vs the base's), and the check that each served quant is the checkpoint the in-process
quality job measured (served vs in-process logprobs of the same quant).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from specsweep.evals.distributions import ScoredWindows, compare, same_checkpoint_problem
from specsweep.evals.lossless import NothingCompared, compare_greedy, describe
from specsweep.records.base import read_record
from specsweep.records.cell import CellRecord
from specsweep.records.quality import QualityRecord
from specsweep.records.table import MANIFEST_KEYS

IDENTITY = ["sweep", "cell_id", "model", "quant", "quant_kind", "drafter", "drafter_kind", "k", "status"]
EVAL_COLUMNS = [
    "lossless_match_pct", "lossless_divergent_prompts", "lossless_reference_cell", "lossless_detail",
    "endpoint_ppl", "endpoint_ppl_base", "endpoint_ppl_recovery_pct", "endpoint_kld_topk", "endpoint_top1_agreement",
    "endpoint_top_k", "endpoint_n_tokens", "endpoint_reference_cell", "endpoint_wall_s",
    "inprocess_ppl", "inprocess_kld", "inprocess_kld_topk", "served_vs_inprocess_kld_topk",
    "served_vs_inprocess_ppl_delta_pct", "served_checkpoint_check",
    "lm_eval_wall_s", "lm_eval_error", "lossless_wall_s", "evals_wall_s",
]  # fmt: skip


class _Cell:
    def __init__(self, cell_dir: Path) -> None:
        self.dir = cell_dir
        self.record = read_record(CellRecord, cell_dir / "bench.json")
        self.manifest = json.loads((cell_dir / "manifest.json").read_text())
        self.evals = self.record.evals

    @property
    def key(self) -> tuple[str, str]:
        return self.record.model, self.record.quant

    def scored(self) -> ScoredWindows | None:
        if self.evals is None or self.evals.endpoint_quality is None:
            return None
        return ScoredWindows.model_validate_json((self.dir / self.evals.endpoint_quality.scored).read_text())


def _lossless(cell: _Cell, baselines: dict[tuple[str, str], _Cell]) -> dict:
    greedy = cell.evals.greedy if cell.evals else None
    if greedy is None or cell.record.drafter_kind == "none":
        return {}
    reference = baselines.get(cell.key)
    if reference is None or reference.evals is None or reference.evals.greedy is None:
        return {"lossless_detail": f"not compared: the sweep has no measured drafter=none cell of quant {cell.record.quant}"}
    try:
        result = compare_greedy(reference.evals.greedy, greedy)
    except NothingCompared as err:
        return {"lossless_reference_cell": reference.record.cell_id, "lossless_detail": f"not compared: {err}"}
    return {
        "lossless_match_pct": result.match_pct,
        "lossless_divergent_prompts": result.divergent_prompts,
        "lossless_reference_cell": reference.record.cell_id,
        "lossless_detail": describe(result),
    }


def _endpoint(cell: _Cell, base: _Cell | None, quality: dict[tuple[str, str], QualityRecord]) -> dict:
    scored = cell.scored()
    if scored is None:
        return {}
    endpoint = cell.evals.endpoint_quality
    row = {"endpoint_top_k": endpoint.top_k, "endpoint_n_tokens": endpoint.n_tokens, "endpoint_wall_s": endpoint.wall_s}
    base_scored = base.scored() if base else None
    if base_scored is not None:
        figures = compare(base_scored, scored)
        row.update({
            "endpoint_ppl": figures.ppl, "endpoint_ppl_base": figures.ppl_reference,
            "endpoint_ppl_recovery_pct": figures.ppl_recovery_pct, "endpoint_kld_topk": figures.kld_topk,
            "endpoint_top1_agreement": figures.top1_agreement, "endpoint_reference_cell": base.record.cell_id,
        })  # fmt: skip
    row.update(_served_vs_in_process(scored, quality.get(cell.key)))
    return row


def _served_vs_in_process(served: ScoredWindows, record: QualityRecord | None) -> dict:
    """The served quant against the same quant measured in-process: agreement means the server serves that
    checkpoint correctly (for W4A16 on CPU: the dequantizing fallback kernel computes the quantized model)."""
    if record is None or record.status != "ok" or record.scored is None:
        reason = record.reason if record is not None and record.reason else "no in-process measurement of this quant"
        return {"served_checkpoint_check": f"not checked: {reason}"}
    row = {"inprocess_ppl": record.ppl, "inprocess_kld": record.kld, "inprocess_kld_topk": record.kld_topk}
    path = Path(record.scored)
    if not path.is_file():
        return {**row, "served_checkpoint_check": f"not checked: the in-process logprobs {path} are gone; rerun quant_quality"}
    try:
        figures = compare(ScoredWindows.model_validate_json(path.read_text()), served)
    except ValueError as err:
        return {**row, "served_checkpoint_check": f"not checked: {err}"}
    return {
        **row,
        "served_vs_inprocess_kld_topk": figures.kld_topk,
        "served_vs_inprocess_ppl_delta_pct": 100 * (figures.ppl / figures.ppl_reference - 1),
        "served_checkpoint_check": same_checkpoint_problem(figures) or "ok",
    }


def _lm_eval(cell: _Cell, base: _Cell | None) -> dict:
    run = cell.evals.lm_eval if cell.evals else None
    if run is None:
        return {}
    if run.status != "ok":
        return {"lm_eval_error": run.error or "lm-eval failed", "lm_eval_wall_s": run.wall_s}
    base_run = base.evals.lm_eval if base and base.evals else None
    base_scores = base_run.headline() if base_run is not None and base_run.status == "ok" else {}
    row = {"lm_eval_wall_s": run.wall_s}
    for task, score in run.headline().items():
        row[f"lm_eval_{task}"] = score.value
        row[f"lm_eval_{task}_stderr"] = score.stderr
        row[f"lm_eval_{task}_metric"] = score.metric
        row[f"lm_eval_{task}_n"] = score.n_samples
        if (reference := base_scores.get(task)) is not None and reference.value:
            row[f"lm_eval_{task}_recovery_pct"] = 100 * score.value / reference.value
    return row


def evals_table(cell_dirs: list[Path], quality_records: list[QualityRecord]) -> pd.DataFrame:
    cells = [_Cell(Path(d)) for d in cell_dirs]
    ok = [c for c in cells if c.record.status == "ok"]
    baselines = {c.key: c for c in ok if c.record.drafter_kind == "none"}
    base_quants = {c.record.model: c for c in ok if c.record.drafter_kind == "none" and c.manifest.get("quant_kind") == "none"}
    quality = {(r.model, r.quant): r for r in quality_records}
    rows = []
    for cell in cells:
        row = {
            **{key: getattr(cell.record, key, None) for key in IDENTITY},
            "quant_kind": cell.manifest.get("quant_kind"),
            **{key: cell.manifest.get(key) for key in MANIFEST_KEYS},
        }
        if cell.record.status == "ok" and cell.evals is not None:
            base = base_quants.get(cell.record.model)
            # What the evals added to the cell's server lifetime, in seconds.
            row.update({"lossless_wall_s": cell.evals.wall_s.get("lossless"),
                        "evals_wall_s": round(sum(cell.evals.wall_s.values()), 1) if cell.evals.wall_s else None})  # fmt: skip
            row.update(_lossless(cell, baselines))
            row.update(_endpoint(cell, base, quality))
            row.update(_lm_eval(cell, baselines.get((cell.record.model, base.record.quant)) if base else None))
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in EVAL_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["k"] = frame["k"].astype("Int64")
    return frame.sort_values("cell_id").reset_index(drop=True)
