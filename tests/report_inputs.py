"""Report test input: real cell records from an earlier sweep, mapped onto today's schema, aggregated for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from specsweep.bench.stats import metric
from specsweep.records.bench import BenchRow, RowErrors, SpecDelta
from specsweep.records.cell import CellRecord, RequestRecord, WorkloadRecord
from specsweep.records.table import build_table

DATA = Path(__file__).parent / "data" / "embedded_v0"
CELLS = sorted(p.name for p in DATA.iterdir() if p.is_dir())


def _workload(old: dict) -> WorkloadRecord:
    requests = old["requests"]
    ok = [r for r in requests if r["ok"]]
    spec = old.get("spec")
    row = BenchRow(
        concurrency=1,
        context_size=0,
        prompt_size=ok[0]["prompt_tokens"],
        response_size=old["max_tokens"],
        pp_throughput=metric([r["prompt_tokens"] / r["ttft_s"] for r in ok]),
        pp_req_throughput=metric([r["prompt_tokens"] / r["ttft_s"] for r in ok]),
        tg_throughput=metric([r["tg_tokens_per_s"] for r in ok]),
        tg_req_throughput=metric([r["tg_tokens_per_s"] for r in ok]),
        peak_throughput=None,
        peak_req_throughput=None,
        ttfr=metric([r["ttft_s"] for r in ok], 1000),
        est_ppt=metric([r["ttft_s"] for r in ok], 1000),
        e2e_ttft=metric([r["ttft_s"] for r in ok], 1000),
        acceptance=SpecDelta(**spec) if spec else None,
        errors=RowErrors(failed=len(requests) - len(ok), total=len(requests), messages=[]),
        token_count_source=["token_ids"],
    )
    return WorkloadRecord(
        workload=old["workload"],
        concurrency=1,
        prompt_file=old["prompt_file"],
        prompt_sha256=old["prompt_sha256"],
        max_tokens=old["max_tokens"],
        row=row,
        requests=[
            RequestRecord(run=r["repeat"], ok=r["ok"], error=r["error"], prompt_tokens=r["prompt_tokens"],
                          completion_tokens=r["completion_tokens"], token_source=r["token_source"],
                          ttfr_s=r["ttft_s"], e2e_ttft_s=r["ttft_s"], token_ids=r["token_ids"], text=r["text"])
            for r in requests
        ],  # fmt: skip
    )


def todays_manifest(v0: Path, cell: str) -> dict:
    """A v0 manifest (before the quant axis) in today's schema: the unquantized base's quant fields, as a bf16 cell
    records them (the served checkpoint is the base model)."""
    manifest = json.loads(v0.read_text())
    return {**manifest, "schema_version": 2, "cell_id": cell, "quant_name": "bf16", "quant_kind": "none",
            "quant_scheme": "none", "quant_location": manifest["model_location"], "quant_revision": None,
            "quant_recipe_sha256": None, "quant_files_sha256": {}}  # fmt: skip


def make_sweep_dir(where: Path, sweep: str = "embedded", skipped: bool = True) -> Path:
    """results/<sweep>/ with the real cells in today's schema, plus (optionally) one skipped cell."""
    sweep_dir = where / sweep
    for cell in CELLS:
        source, target = DATA / cell, sweep_dir / cell
        target.mkdir(parents=True, exist_ok=True)
        old = json.loads((source / "bench.json").read_text())
        record = CellRecord(
            sweep=sweep, cell_id=cell, status=old["status"], skip_reason=old["skip_reason"], model=old["model"],
            quant=old["quant"], drafter=old["drafter"], drafter_kind=old["drafter_kind"], k=old["k"],
            speculative_config=old["speculative_config"], server_startup_s=old["server_startup_s"],
            workloads=[_workload(w) for w in old["workloads"]],
        )  # fmt: skip
        (target / "bench.json").write_text(record.model_dump_json())
        (target / "manifest.json").write_text(json.dumps(todays_manifest(source / "manifest.json", cell)))
        for name in ("config.yaml", "server.log"):
            shutil.copy2(source / name, target / name)
    if skipped:
        cell = "gemma3_270m-bf16-suffix-k4"
        target = sweep_dir / cell
        target.mkdir(parents=True, exist_ok=True)
        record = CellRecord(
            sweep=sweep, cell_id=cell, status="skipped", skip_reason="suffix decoding needs arctic-inference",
            model="gemma3_270m", quant="bf16", drafter="suffix", drafter_kind="suffix", k=4, speculative_config=None,
        )  # fmt: skip
        (target / "bench.json").write_text(record.model_dump_json())
        (target / "manifest.json").write_text(json.dumps(todays_manifest(DATA / CELLS[0] / "manifest.json", cell)))
        shutil.copy2(DATA / CELLS[0] / "config.yaml", target / "config.yaml")
    cell_dirs = sorted(p for p in sweep_dir.iterdir() if (p / "bench.json").is_file())
    build_table(cell_dirs).to_csv(sweep_dir / "table.csv", index=False)
    return sweep_dir


def add_quant_axis(sweep_dir: Path) -> pd.DataFrame:
    """What the quant axis will add: a second quant's rows and per-quant quality columns plus quality.csv.

    The w4a16 rows are the bf16 rows scaled (invented test input for the quality code paths, not a
    measurement); the bf16 quality figures are the design doc's measured dense baseline.
    """
    table = pd.read_csv(sweep_dir / "table.csv")
    w4 = table.copy()
    w4["quant"] = "w4a16"
    w4["cell_id"] = w4["cell_id"].str.replace("-bf16-", "-w4a16-")
    for column in ("tg_tps_mean", "tg_tps_std"):
        w4[column] = w4[column] * 0.8
    both = pd.concat([table, w4], ignore_index=True)
    quality = pd.DataFrame(
        [
            {"model": "gemma3_270m", "quant": "bf16", "quant_kind": "none", "ppl": 22.0, "kld": 0.0,
             "ppl_recovery_pct": 100.0, "n_tokens": 4096, "method": "prompt_logprobs"},
            {"model": "gemma3_270m", "quant": "w4a16", "quant_kind": "gptq", "ppl": 26.2, "kld": 0.08,
             "ppl_recovery_pct": 84.0, "n_tokens": 4096, "method": "prompt_logprobs"},
        ]
    )  # fmt: skip
    both = both.merge(quality[["quant", "ppl", "kld", "ppl_recovery_pct"]], on="quant", how="left")
    both.to_csv(sweep_dir / "table.csv", index=False)
    quality.to_csv(sweep_dir / "quality.csv", index=False)
    return both
