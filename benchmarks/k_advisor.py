"""The k-advisor against brute force, on the embedded model (issue 14's acceptance figures, from one run).

    .venv/bin/python benchmarks/k_advisor.py            # runs what is missing, then prints every figure
    .venv/bin/python benchmarks/k_advisor.py --no-run   # figures from results/ already there

1. Brute force (`snakemake --config sweep=k_advisor`): no drafter and ngram k = 1..7 on the bf16 base, two
   workloads at concurrency 1 and 2, three runs each.
2. Predictions: per (workload, concurrency), tg t/s for every k from the k = 7 cell's traces and the step cost
   fitted on every measured cell, against each measured k (error %); and again from what an adaptive search has
   after its first round (no drafter + k = 7 only).
3. Adaptive, for real: `specsweep adapt sweep=k_advisor sweep.name=k_advisor_adaptive` (its own results dir, so
   every cell it needs is served again): the k it picks, that k's brute-force t/s against the brute-force best, and
   the server-seconds (each cell's job wall time from its manifest) of its cells against brute force's.
4. The schedule: the recommended `num_speculative_tokens_per_batch_size` served as a cell
   (sweep k_advisor_schedule), predicted vs measured per workload and concurrency.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from specsweep.advise.adaptive import objective
from specsweep.advise.advice import advise, advise_sweep_dir, load_traces
from specsweep.advise.driver import state_path
from specsweep.advise.policies import batch_size_schedule
from specsweep.paths import project_root
from specsweep.records.adaptive import AdaptiveState
from specsweep.records.base import read_record

K_MAX = 7


def snakemake(*config: str) -> None:
    argv = [sys.executable, "-m", "snakemake", "--config", *config]
    print(f"$ {' '.join(argv)}", file=sys.stderr, flush=True)
    subprocess.run(argv, cwd=project_root(), check=True)


def server_seconds(sweep_dir: Path, cell_id: str) -> float:
    manifest = json.loads((sweep_dir / cell_id / "manifest.json").read_text())
    started, finished = (datetime.strptime(manifest[key], "%Y-%m-%dT%H:%M:%SZ") for key in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def _measured(by_k: dict[int, pd.DataFrame], k: int, workload: str, concurrency: int) -> float | None:
    rows = by_k.get(k)
    row = rows[(rows["workload"] == workload) & (rows["concurrency"] == concurrency)] if rows is not None else rows
    return float(row["tg_req_tps_mean"].iloc[0]) if row is not None and len(row) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="only read results/ (run nothing)")
    args = parser.parse_args()
    root = project_root()
    brute_dir = root / "results/k_advisor"
    if not args.no_run:
        snakemake("sweep=k_advisor")
    table = pd.read_csv(brute_dir / "table.csv")
    table = table[(table["status"] == "ok") & table["workload"].notna()]
    by_k = {0 if pd.isna(k) else int(k): rows for k, rows in table.groupby(table["k"].fillna(0))}

    print("\n## Predicted vs measured tg t/s per request (k_max = 7 traces replayed, step cost fitted on every cell)\n")
    advice = advise_sweep_dir(brute_dir, max_num_seqs=4)
    errors = []
    print("| workload | c | k | predicted | measured | error % |\n|---|---:|---:|---:|---:|---:|")
    for group in advice.groups:
        for p in group.predictions:
            errors.append(abs(p.error_pct))
            print(f"| {group.workload} | {group.concurrency} | {p.k} | {p.predicted_tg_req_tps:.2f} | "
                  f"{p.measured_tg_req_tps:.2f} | {p.error_pct:+.1f} |")  # fmt: skip
    print(f"\nmax |error| {max(errors):.1f} %, mean |error| {sum(errors) / len(errors):.1f} % over {len(errors)} predictions")
    for group in advice.groups:
        print(f"- {group.workload} c{group.concurrency}: plain step {group.plain_step_ms:.1f} ms ({100 * group.plain_step_share:.0f} % "
              f"of k = 7's steps), drafted {group.draft_step_fixed_ms:+.1f} ms + {group.cost_per_token_ms:.2f} ms·k (fit RMS "
              f"{group.cost_fit_rms_error_pct:.1f} %); best k {group.best_k}; HF heuristic "
              f"{group.hf_heuristic_tg_req_tps or math.nan:.2f} t/s, oracle {group.oracle_tg_req_tps or math.nan:.2f} t/s")  # fmt: skip
    first_round = [str(by_k[k]["cell_id"].iloc[0]) for k in (0, K_MAX)]
    configs, traces = load_traces(brute_dir, first_round)
    early = advise(table[table["cell_id"].isin(first_round)], "first round", 4, configs, traces)
    early_errors = [abs(100 * (p.predicted_tg_req_tps / measured - 1)) for g in early.groups for p in g.predictions
                    if (measured := _measured(by_k, p.k, g.workload, g.concurrency))]  # fmt: skip
    print(f"\nfrom no drafter + k = {K_MAX} alone (an adaptive search's first round): max |error| "
          f"{max(early_errors):.1f} %, mean {sum(early_errors) / len(early_errors):.1f} % over {len(early_errors)} predictions")

    print("\n## Adaptive vs brute force\n")
    brute = {k: objective(rows) for k, rows in by_k.items()}
    brute_best = max(brute, key=brute.get)
    seconds = {k: server_seconds(brute_dir, str(rows["cell_id"].iloc[0])) for k, rows in by_k.items()}
    adaptive_dir = root / "results/k_advisor_adaptive"
    if not args.no_run:
        # A fresh search: a state left by an earlier run would start from that run's cells.
        shutil.rmtree(adaptive_dir, ignore_errors=True)
        argv = [sys.executable, "-m", "specsweep.cli", "adapt", "sweep=k_advisor", "sweep.name=k_advisor_adaptive"]
        print(f"$ {' '.join(argv)}", file=sys.stderr, flush=True)
        subprocess.run(argv, cwd=root, check=True)
    state = read_record(AdaptiveState, state_path(adaptive_dir))
    (search,) = state.groups.values()
    adaptive_cells = {cell: server_seconds(adaptive_dir, cell) for cell in state.cells}
    adaptive_seconds = sum(adaptive_cells.values())
    # The k search alone: the drafter's cells (the no-drafter cell is a cell of both sweeps, for the speedups).
    search_seconds = sum(t for cell, t in adaptive_cells.items() if not cell.endswith("-none"))
    brute_search_seconds = sum(t for k, t in seconds.items() if k > 0)
    print(f"brute force: best k {brute_best} at {brute[brute_best]:.2f} t/s (geomean per-request over 4 rows), "
          f"{sum(seconds.values()):.0f} server-seconds over {len(seconds)} cells")
    print(f"adaptive: measured k in order {search.order} ({len(state.cells)} cells); picked k {search.best_k}: "
          f"{search.measured[search.best_k]:.2f} t/s in its own run, {brute[search.best_k]:.2f} t/s in the brute-force "
          f"run = {100 * brute[search.best_k] / brute[brute_best]:.1f} % of the best; {adaptive_seconds:.0f} server-seconds "
          f"({100 * adaptive_seconds / sum(seconds.values()):.1f} % of brute force); the k search alone (drafter "
          f"cells): {search_seconds:.0f} of {brute_search_seconds:.0f} server-seconds "
          f"({100 * search_seconds / brute_search_seconds:.1f} %)")  # fmt: skip
    for k, before in sorted(search.predicted_before_measuring.items()):
        print(f"- k {k}: predicted {before:.2f} t/s before it was measured, measured {search.measured[k]:.2f} "
              f"({100 * (before / search.measured[k] - 1):+.1f} %)")  # fmt: skip

    print("\n## The recommended schedule, served\n")
    best_by_concurrency = {}
    for concurrency in sorted(table["concurrency"].unique()):
        at = {k: objective(rows[rows["concurrency"] == concurrency]) for k, rows in by_k.items()}
        best_by_concurrency[int(concurrency)] = max(at, key=at.get)
    schedule = batch_size_schedule(best_by_concurrency, 4)
    top = max(entry[2] for entry in schedule)
    overrides = f"sweep.name=k_advisor_schedule drafter=ngram k={top} k_schedule={json.dumps(schedule).replace(' ', '')}"
    print(f"best k by concurrency {best_by_concurrency}: schedule {schedule}")
    if not args.no_run:
        snakemake("sweep=k_advisor", f"overrides={overrides}")
    served = pd.read_csv(root / "results/k_advisor_schedule/table.csv")
    served = served[(served["status"] == "ok") & served["workload"].notna()]
    predicted = {(g.workload, g.concurrency): {p.k: p.predicted_tg_req_tps for p in g.predictions} for g in advice.groups}
    print("| workload | c | k (schedule) | predicted | measured | error % |\n|---|---:|---:|---:|---:|---:|")
    for row in served.itertuples():
        k = next(entry[2] for entry in schedule if entry[0] <= row.concurrency <= entry[1])
        value = predicted[(row.workload, int(row.concurrency))].get(k)
        print(f"| {row.workload} | {int(row.concurrency)} | {k} | {value:.2f} | {row.tg_req_tps_mean:.2f} | "
              f"{100 * (value / row.tg_req_tps_mean - 1):+.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
