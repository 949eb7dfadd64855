"""What every report reads: the sweep's tidy table, its quality table, manifests, and derived figures.

The quant axis adds `ppl`, `kld`, `ppl_recovery_pct` to the table and a separate quality.csv; both
may be absent (sweeps without quality evals), so everything here treats them as optional.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from specsweep.records.advice import Advice
from specsweep.records.base import read_record
from specsweep.records.host import CpuFacts
from specsweep.records.manifest import Manifest
from specsweep.records.table import MEMORY_COLUMNS

QUALITY_COLUMNS = ["ppl", "kld", "ppl_recovery_pct"]
QUALITY_TABLE_COLUMNS = ["model", "quant", "quant_kind", "ppl", "kld", "ppl_recovery_pct", "n_tokens", "method"]
ROW_KEYS = ["quant", "drafter", "workload", "concurrency"]


@dataclass
class SweepData:
    sweep: str
    table: pd.DataFrame
    quality: pd.DataFrame
    # cell id -> manifest.json contents (cells whose dir is next to the table).
    manifests: dict[str, dict] = field(default_factory=dict)
    # One row per cell: losslessness, endpoint PPL/KLD, lm-eval (evals.csv; empty when the sweep has none).
    evals: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The k-advisor's predictions next to the measurements, one row per (group, k) (advice.json; may be empty).
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)


def load_sweep(sweep_dir: Path) -> SweepData:
    sweep_dir = Path(sweep_dir)
    table = pd.read_csv(sweep_dir / "table.csv")
    return from_table(table, sweep_dir)


def from_table(table: pd.DataFrame, sweep_dir: Path | None = None) -> SweepData:
    table = normalise(table)
    quality_csv = sweep_dir / "quality.csv" if sweep_dir else None
    quality = pd.read_csv(quality_csv) if quality_csv and quality_csv.is_file() else quality_from_table(table)
    manifests = {}
    if sweep_dir:
        for cell_id in table["cell_id"].dropna().unique():
            path = sweep_dir / str(cell_id) / "manifest.json"
            if path.is_file():
                manifests[str(cell_id)] = read_record(Manifest, path).model_dump(mode="json")
    sweep = str(table["sweep"].dropna().iloc[0]) if "sweep" in table and table["sweep"].notna().any() else "sweep"
    evals_csv = sweep_dir / "evals.csv" if sweep_dir else None
    evals = pd.read_csv(evals_csv) if evals_csv and evals_csv.is_file() else pd.DataFrame()
    advice_json = sweep_dir / "advice.json" if sweep_dir else None
    predictions = advice_predictions(read_record(Advice, advice_json).model_dump()) if advice_json and advice_json.is_file() else pd.DataFrame()
    return SweepData(sweep=sweep, table=table, quality=quality, manifests=manifests, evals=evals, predictions=predictions)


def advice_predictions(advice: dict) -> pd.DataFrame:
    """One row per (group, k) with policy "fixed k", and one per served schedule cell and test ("schedule ...", k =
    the k the schedule sets at that concurrency)."""
    rows = [
        {"quant": g["quant"], "drafter": g["drafter"], "workload": g["workload"], "concurrency": g["concurrency"],
         "policy": "fixed k", "k": p["k"], "predicted_tg_req_tps": p["predicted_tg_req_tps"],
         "measured_tg_req_tps": p["measured_tg_req_tps"], "error_pct": p["error_pct"]}
        for g in advice.get("groups", []) for p in g["predictions"]
    ] + [
        {"quant": c["quant"], "drafter": c["drafter"], "workload": c["workload"], "concurrency": c["concurrency"],
         "policy": "schedule " + json.dumps(c["schedule"], separators=(",", ":")), "k": c["k"],
         "predicted_tg_req_tps": c["predicted_tg_req_tps"], "measured_tg_req_tps": c["measured_tg_req_tps"],
         "error_pct": c["error_pct"]}
        for c in advice.get("schedule_checks", [])
    ]  # fmt: skip
    return pd.DataFrame(rows)


def normalise(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for column in QUALITY_COLUMNS:
        if column not in table:
            table[column] = math.nan
    table["k"] = pd.to_numeric(table["k"], errors="coerce").astype("Int64")
    table["concurrency"] = pd.to_numeric(table["concurrency"], errors="coerce").astype("Int64")
    return table


def quality_from_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per quant from the per-quant columns the table repeats on every row of that quant."""
    present = table[["model", "quant", *QUALITY_COLUMNS]].dropna(subset=QUALITY_COLUMNS, how="all")
    quality = present.drop_duplicates(subset=["model", "quant"]).reset_index(drop=True)
    return quality.reindex(columns=QUALITY_TABLE_COLUMNS)


def measured(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with figures: cells that ran, one row per workload x concurrency."""
    return table[(table["status"] == "ok") & table["workload"].notna()]


def position_columns(table: pd.DataFrame) -> list[str]:
    columns = [c for c in table.columns if c.startswith("acceptance_pos_")]
    return sorted(columns, key=lambda c: int(c.rsplit("_", 1)[1]))


def with_speedup(table: pd.DataFrame) -> pd.DataFrame:
    """Measured rows plus `baseline_tg_tps` and `speedup`: tg t/s over the same quant's no-drafter cell.

    Matched on model, quant, workload and concurrency; a row whose baseline did not run gets NaN, not 1.
    """
    rows = measured(table).copy()
    keys = ["model", "quant", "workload", "concurrency"]
    baseline = (
        rows[rows["drafter_kind"] == "none"]
        .groupby(keys, dropna=False)["tg_tps_mean"]
        .mean()
        .rename("baseline_tg_tps")
        .reset_index()
    )
    rows = rows.merge(baseline, on=keys, how="left")
    rows["speedup"] = rows["tg_tps_mean"] / rows["baseline_tg_tps"]
    return rows


def best_k(table: pd.DataFrame) -> pd.DataFrame:
    """Per (quant, drafter, workload, concurrency): the k with the highest tg t/s, and its speedup."""
    rows = with_speedup(table)
    drafted = rows[rows["drafter_kind"] != "none"].dropna(subset=["tg_tps_mean"])
    if drafted.empty:
        return pd.DataFrame(columns=[*ROW_KEYS, "best_k", "tg_tps_mean", "speedup", "acceptance_rate"])
    best = drafted.loc[drafted.groupby(ROW_KEYS, dropna=False)["tg_tps_mean"].idxmax()]
    best = best.rename(columns={"k": "best_k"})
    return best[[*ROW_KEYS, "best_k", "tg_tps_mean", "speedup", "acceptance_rate"]].reset_index(drop=True)


def summary(table: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """quant x drafter x k: tg t/s and speedup averaged over workload x concurrency rows, pooled acceptance.

    Speedup is the geometric mean of per-row ratios (ratios average multiplicatively); acceptance is
    pooled from counts (Σaccepted / Σdraft tokens), not a mean of rates.
    """
    rows = with_speedup(table)
    keys = ["quant", "drafter", "k"]
    out = []
    for (quant, drafter, k), group in rows.groupby(keys, dropna=False, sort=True):
        ratios = group["speedup"].dropna()
        ratios = ratios[ratios > 0]
        draft_tokens = group["draft_tokens"].fillna(0).sum()
        drafts = group["drafts"].fillna(0).sum()
        accepted = group["accepted_tokens"].fillna(0).sum()
        out.append(
            {
                "quant": quant,
                "drafter": drafter,
                "k": k,
                "rows": len(group),
                "tg_tps_mean": group["tg_tps_mean"].mean(),
                "speedup_geomean": math.exp(sum(map(math.log, ratios)) / len(ratios)) if len(ratios) else math.nan,
                "acceptance_rate": accepted / draft_tokens if draft_tokens else math.nan,
                "mean_acceptance_length": 1 + accepted / drafts if drafts else math.nan,
            }
        )
    frame = pd.DataFrame(
        out,
        columns=["quant", "drafter", "k", "rows", "tg_tps_mean", "speedup_geomean", "acceptance_rate",
                 "mean_acceptance_length"],
    )  # fmt: skip
    frame["k"] = frame["k"].astype("Int64")
    per_quant = quality.drop_duplicates(subset=["quant"])[["quant", *QUALITY_COLUMNS]] if len(quality) else None
    if per_quant is not None:
        frame = frame.merge(per_quant, on="quant", how="left")
    else:
        for column in QUALITY_COLUMNS:
            frame[column] = math.nan
    return frame


def skipped(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "skipped"][["cell_id", "quant", "drafter", "k", "skip_reason"]]


def provenance(table: pd.DataFrame) -> str | None:
    """Which cells a narrowed run's table holds besides its own (None when the run measured them all)."""
    if "this_run" not in table:
        return None
    cells = table.drop_duplicates("cell_id")
    this_run = cells["this_run"].astype(str).str.lower() == "true"  # a bool, or its CSV text
    if this_run.all():
        return None
    earlier = ", ".join(sorted(cells.loc[~this_run, "cell_id"].astype(str)))
    return (f"{int(this_run.sum())} of the {len(cells)} cells measured by the latest run; the other "
            f"{int((~this_run).sum())} kept from earlier runs of this sweep (column this_run): {earlier}")


def failed(table: pd.DataFrame) -> pd.DataFrame:
    """Cells that ran and broke, with the error and the server log's last lines."""
    columns = ["cell_id", "quant", "drafter", "k", "error", "server_log_tail"]
    if "error" not in table:
        return pd.DataFrame(columns=columns)
    return table[table["status"] == "failed"].reindex(columns=columns)


def manifest_summary(data: SweepData) -> dict[str, str]:
    """What produced the numbers, once for the sweep; values that differ between cells are listed."""
    keys = ["specsweep_version", "git_sha", "git_dirty", "vllm_version", "image_name", "image_key",
            "model_name", "model_source_sha256", "seed"]  # fmt: skip
    serving = {json.dumps(m["serving"], sort_keys=True) for m in data.manifests.values() if m.get("serving")}
    cpus = {json.dumps(m["host_cpu"], sort_keys=True) for m in data.manifests.values() if m.get("host_cpu")}
    out: dict[str, str] = {"sweep": data.sweep, "cells": str(data.table["cell_id"].nunique())}
    manifests = list(data.manifests.values())
    for key in keys:
        values = sorted({str(m.get(key)) for m in manifests}) if manifests else []
        if not values and key in data.table:
            values = sorted({str(v) for v in data.table[key].dropna().unique()})
        if values:
            out[key] = ", ".join(values)
    hardware = {json.dumps(m.get("hardware", {}), sort_keys=True) for m in manifests}
    for item in sorted(hardware):
        for name, value in json.loads(item).items():
            out[f"hardware.{name}"] = str(value)
    for item in sorted(cpus):
        cpu = json.loads(item)
        out["host_cpu"] = f"{cpu['model']} ({CpuFacts.model_validate(cpu).isa})"
    for item in sorted(serving):
        choice = json.loads(item)
        out[f"serving.{choice['dtype']}"] = (
            f"{choice['dtype_reason']}; W4A16 kernel {choice['wna16_kernel']} ({choice['wna16_reason']})"
        )
    starts = sorted(m["started_at"] for m in manifests if m.get("started_at"))
    ends = sorted(m["finished_at"] for m in manifests if m.get("finished_at"))
    if starts and ends:
        out["measured"] = f"{starts[0]} .. {ends[-1]}"
    return out


def lm_eval_tasks(evals: pd.DataFrame) -> list[str]:
    """Tasks with a headline score column (lm_eval_<task>) in the evals table."""
    suffixes = ("_stderr", "_metric", "_n", "_recovery_pct", "_wall_s")
    return [c.removeprefix("lm_eval_") for c in evals.columns if c.startswith("lm_eval_") and not c.endswith(suffixes)]


def cell_quality(data: SweepData) -> tuple[pd.DataFrame, str | None]:
    """Per measured cell: tg t/s (mean over its rows), the quality of what it serves, and whether it was lossless.

    A cell's quality is its quant's (taken from the quant's no-drafter cell): a lossless drafter changes speed,
    not outputs. The first available figure: the first lm-eval task's score, else endpoint PPL recovery %, else
    the in-process PPL recovery %. Returns the frame and the name of the figure used (None: no quality figure).
    """
    rows = measured(data.table)
    speed = rows.groupby(["cell_id", "quant", "drafter", "k"], dropna=False)["tg_tps_mean"].mean().reset_index()
    evals = data.evals
    tasks = lm_eval_tasks(evals) if len(evals) else []
    candidates = [(f"lm_eval_{tasks[0]}", f"lm-eval {tasks[0]}")] if tasks else []
    candidates += [("endpoint_ppl_recovery_pct", "endpoint PPL recovery %")]
    metric = label = None
    per_quant = pd.DataFrame(columns=["quant", "quality"])
    for column, name in candidates:
        if column in evals and evals[column].notna().any():
            baselines = evals[(evals["drafter_kind"] == "none") & evals[column].notna()]
            per_quant = baselines.groupby("quant")[column].first().rename("quality").reset_index()
            metric, label = column, name
            break
    if metric is None and len(data.quality) and data.quality["ppl_recovery_pct"].notna().any():
        per_quant = data.quality[["quant", "ppl_recovery_pct"]].rename(columns={"ppl_recovery_pct": "quality"})
        label = "in-process PPL recovery %"
    speed = speed.merge(per_quant, on="quant", how="left")
    lossless = evals[["cell_id", "lossless_match_pct"]] if "lossless_match_pct" in evals else None
    if lossless is not None:
        speed = speed.merge(lossless, on="cell_id", how="left")
    else:
        speed["lossless_match_pct"] = math.nan
    return speed, label


SYNTHETIC_ROW = r"^pp\d+_tg\d+_d(\d+)$"


def acceptance_by_depth(table: pd.DataFrame) -> pd.DataFrame:
    """Per drafter cell: acceptance at each draft position vs context depth, from llama-benchy's rows (the same
    text at d0, d4096, ...; concurrency 1, drafts-weighted over runs). The long-context question: does a drafter
    keep accepting at 30k tokens of context, and at which positions does it fall apart?"""
    rows = measured(table)
    rows = rows[(rows["drafter_kind"] != "none") & (rows["concurrency"] == 1)].copy()
    rows["depth"] = pd.to_numeric(rows["workload"].astype(str).str.extract(SYNTHETIC_ROW)[0], errors="coerce")
    rows = rows.dropna(subset=["depth"])
    out = []
    for (cell_id, quant, drafter, k, depth), group in rows.groupby(["cell_id", "quant", "drafter", "k", "depth"]):
        weights = group["drafts"].fillna(0)
        for column in position_columns(group)[: int(k)]:
            valid = group[column].notna() & (weights > 0)
            if valid.any():
                out.append({"cell_id": cell_id, "quant": quant, "drafter": drafter, "k": int(k), "depth": int(depth),
                            "position": int(column.rsplit("_", 1)[1]),
                            "acceptance": float((group[column][valid] * weights[valid]).sum() / weights[valid].sum())})  # fmt: skip
    return pd.DataFrame(out, columns=["cell_id", "quant", "drafter", "k", "depth", "position", "acceptance"])


def memory_per_cell(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell that recorded memory: weights on disk, what vLLM gave the KV cache and its capacity in
    tokens, the peak memory of the server's processes (GiB)."""
    columns = [c for c in MEMORY_COLUMNS if c in table]
    if not columns:
        return pd.DataFrame()
    cells = table.drop_duplicates("cell_id").dropna(subset=columns, how="all")
    keep = [c for c in columns if cells[c].notna().any()]
    return cells[["cell_id", "quant", "drafter", "k", *keep]].reset_index(drop=True)

