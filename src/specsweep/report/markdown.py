"""Forum-ready markdown: a llama-benchy-style table per cell and one sweep summary table."""

from __future__ import annotations

import math

import pandas as pd

from specsweep.bench.formats import _pipe_table
from specsweep.report.data import (
    SweepData,
    acceptance_by_depth,
    best_k,
    failed,
    lm_eval_tasks,
    memory_per_cell,
    provenance,
    skipped,
    summary,
)


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return f"{value:.{digits}f}"


def _pm(row, name: str) -> str:
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.2f} ± {0.0 if std is None or pd.isna(std) else std:.2f}"


def _k(value) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def cell_table(rows: pd.DataFrame) -> str:
    """llama-benchy's columns (`specsweep bench --format md`), pp and tg rows per workload x concurrency."""
    headers = ["model", "test", "t/s", "peak t/s", "ttfr (ms)", "est_ppt (ms)", "e2e_ttft (ms)",
               "accept", "accept len", "errors"]  # fmt: skip
    data = []
    for row in rows.sort_values(["workload", "concurrency"]).to_dict("records"):
        conc = f" (c{int(row['concurrency'])})"
        ok_requests = max(int(row["n_requests"]) - int(row["n_failed"]), 1)
        errors = f"{int(row['n_failed'])}/{int(row['n_requests'])}" if row["n_failed"] else ""
        model = row["model"]
        data.append([model, f"{row['workload']} pp{int(row['prompt_tokens'])}{conc}", _pm(row, "pp_tps"), "",
                     _pm(row, "ttfr_ms"), _pm(row, "est_ppt_ms"), _pm(row, "e2e_ttft_ms"), "", "", errors])  # fmt: skip
        tg = round(row["completion_tokens"] / ok_requests)
        data.append([model, f"{row['workload']} tg{tg}{conc}", _pm(row, "tg_tps"), _pm(row, "peak_tps"), "", "", "",
                     _num(row.get("acceptance_rate"), 3), _num(row.get("mean_acceptance_length")), errors])  # fmt: skip
    return _pipe_table(headers, data, ["left", "left"] + ["right"] * (len(headers) - 2))


def summary_table(data: SweepData) -> str:
    frame = summary(data.table, data.quality)
    headers = ["quant", "drafter", "k", "tg t/s", "speedup", "accept", "accept len", "PPL", "KLD", "PPL rec. %"]
    rows = [
        [str(r["quant"]), str(r["drafter"]), _k(r["k"]), _num(r["tg_tps_mean"]), _num(r["speedup_geomean"]) + "×"
         if not pd.isna(r["speedup_geomean"]) else "", _num(r["acceptance_rate"], 3),
         _num(r["mean_acceptance_length"]), _num(r["ppl"]), _num(r["kld"], 4), _num(r["ppl_recovery_pct"], 1)]
        for r in frame.to_dict("records")
    ]  # fmt: skip
    return _pipe_table(headers, rows, ["left", "left"] + ["right"] * (len(headers) - 2))


def best_k_table(data: SweepData) -> str:
    frame = best_k(data.table)
    headers = ["quant", "drafter", "workload", "c", "best k", "tg t/s", "speedup", "accept"]
    rows = [
        [str(r["quant"]), str(r["drafter"]), str(r["workload"]), _k(r["concurrency"]), _k(r["best_k"]),
         _num(r["tg_tps_mean"]), _num(r["speedup"]), _num(r["acceptance_rate"], 3)]
        for r in frame.to_dict("records")
    ]  # fmt: skip
    return _pipe_table(headers, rows, ["left"] * 3 + ["right"] * 5)


MEMORY_HEADERS = {"mem_weights_gib": "weights", "mem_drafter_weights_gib": "drafter weights",
                  "mem_checkpoint_gib": "checkpoint", "mem_model_gib": "model (GPU)", "mem_kv_cache_gib": "KV cache",
                  "kv_cache_tokens": "KV tokens", "kv_cache_max_concurrency": "fits × max_model_len",
                  "max_model_len": "max_model_len", "mem_peak_rss_gib": "peak RSS", "mem_pss_at_end_gib": "PSS at end"}  # fmt: skip


def memory_table(memory: pd.DataFrame) -> str:
    columns = [c for c in MEMORY_HEADERS if c in memory]
    rows = [[str(r["cell_id"]), *(_num(r[c], 0 if c in ("kv_cache_tokens", "max_model_len") else 2) for c in columns)]
            for r in memory.to_dict("records")]  # fmt: skip
    return _pipe_table(["cell", *(MEMORY_HEADERS[c] for c in columns)], rows, ["left"] + ["right"] * len(columns))


def evals_table(data: SweepData) -> str:
    """Quality per cell: losslessness, endpoint PPL/KLD against the base, lm-eval with recovery."""
    evals = data.evals
    tasks = lm_eval_tasks(evals)
    headers = ["cell", "lossless %", "PPL", "PPL rec. %", "top-k KLD", "top-1", "served = checkpoint",
               *(f"{task}" for task in tasks), *(f"{task} rec. %" for task in tasks)]  # fmt: skip
    rows = []
    for r in evals.to_dict("records"):
        check = r.get("served_checkpoint_check")
        rows.append([str(r["cell_id"]), _num(r.get("lossless_match_pct"), 1), _num(r.get("endpoint_ppl")),
                     _num(r.get("endpoint_ppl_recovery_pct"), 1), _num(r.get("endpoint_kld_topk"), 4),
                     _num(r.get("endpoint_top1_agreement"), 3), "" if not isinstance(check, str) else check,
                     *(_num(r.get(f"lm_eval_{t}"), 3) for t in tasks),
                     *(_num(r.get(f"lm_eval_{t}_recovery_pct"), 1) for t in tasks)])  # fmt: skip
    return _pipe_table(headers, rows, ["left"] + ["right"] * (len(headers) - 1))


def depth_table(data: SweepData) -> str:
    """Acceptance per position (columns) at each depth (rows), per drafter cell."""
    frame = acceptance_by_depth(data.table)
    if frame.empty:
        return ""
    positions = sorted(frame["position"].unique())
    headers = ["cell", "depth", *(f"pos {p}" for p in positions)]
    rows = []
    for (cell, depth), group in frame.groupby(["cell_id", "depth"]):
        rates = dict(zip(group["position"], group["acceptance"]))
        rows.append([str(cell), str(depth), *(_num(rates.get(p), 3) for p in positions)])
    return _pipe_table(headers, rows, ["left"] + ["right"] * (len(headers) - 1))


def render(data: SweepData) -> str:
    table = data.table
    parts = [
        f"# specsweep: {data.sweep}",
        "",
        *([kept, ""] if (kept := provenance(table)) else []),
        "## Summary (quant × drafter × k)",
        "",
        "tg t/s: mean over workload × concurrency rows; speedup: geometric mean of tg t/s over the same quant's "
        "no-drafter cell; accept: Σaccepted / Σdraft tokens.",
        "",
        summary_table(data),
        "",
        "## Best k per quant, drafter, workload and concurrency",
        "",
        best_k_table(data),
        "",
    ]
    if depth := depth_table(data):
        parts += ["## Acceptance vs context depth", "", "llama-benchy rows, concurrency 1: accepted / drafts at each "
                  "draft position.", "", depth, ""]  # fmt: skip
    if len(data.evals):
        parts += ["## Quality per cell", "", "lossless %: greedy tokens matching the same quant's no-drafter cell at "
                  "concurrency 1; PPL / top-k KLD / top-1: prompt logprobs through the server vs the base's cell; "
                  "served = checkpoint: served logprobs vs the same quant in-process.", ""]  # fmt: skip
        flagged = data.evals[data.evals["lossless_match_pct"].notna() & (data.evals["lossless_match_pct"] < 100)]
        parts += [f"- **not lossless** `{r.cell_id}`: {r.lossless_detail}" for r in flagged.itertuples()]
        parts += ["", evals_table(data), ""]
    if len(memory := memory_per_cell(table)):
        parts += ["## Memory per cell", "", "GiB; KV cache: memory and capacity in tokens vLLM reported, with the "
                  "requests of max_model_len tokens that fit; peak RSS: the server's processes while serving (shared pages "
                  "counted per process); PSS at end: shared pages split, after the workloads.", "",
                  memory_table(memory), ""]  # fmt: skip
    failed_cells = failed(table)
    if len(failed_cells):
        parts += ["## Failed cells", "", "These cells ran and broke; their rows are missing from the tables above.", ""]
        for r in failed_cells.itertuples():
            parts += [f"- `{r.cell_id}`: {r.error}", "", "  ```", *(f"  {line}" for line in str(r.server_log_tail or "").splitlines()), "  ```", ""]
    skipped_cells = skipped(table)
    if len(skipped_cells):
        parts += ["## Skipped cells", ""]
        parts += [f"- `{r.cell_id}`: {r.skip_reason}" for r in skipped_cells.itertuples()]
        parts += [""]
    parts += ["## Per cell", ""]
    for cell_id, rows in table[table["status"] == "ok"].groupby("cell_id", sort=True):
        first = rows.iloc[0]
        k = "" if pd.isna(first["k"]) else f", k={int(first['k'])}"
        parts += [f"### {cell_id}", "", f"quant {first['quant']}, drafter {first['drafter']}{k}", "",
                  cell_table(rows[rows["workload"].notna()]), ""]  # fmt: skip
    return "\n".join(parts)
