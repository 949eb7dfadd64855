"""`specsweep advise`: from a sweep's measured cells, the acceptance process, the step-cost fit, predicted tg t/s
for every k <= k_max, and the recommended `--speculative-config` per workload and concurrency."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import fmean

import pandas as pd

from specsweep.advise.acceptance import Trace, conditional_from_marginal, expected_tokens_per_step
from specsweep.advise.cost import StepCost, StepMix, fit
from specsweep.advise.policies import (
    PolicyResult,
    batch_size_schedule,
    best_fixed_k,
    fixed_k,
    fixed_k_tps,
    oracle,
    replay_hf,
)
from specsweep.config.schema.drafter import drafts_in_chain
from specsweep.records.advice import Advice, CostPoint, GroupAdvice, KPrediction, Recommendation, ScheduleCheck

GROUP = ["model", "quant", "drafter", "workload", "concurrency"]





def k_in_effect(schedule: list[list[int]], batch_size: int) -> int:
    """vLLM's k for a batch of this size under `num_speculative_tokens_per_batch_size` (past the last range: its k)."""
    for low, high, k in schedule:
        if low <= batch_size <= high:
            return k
    return schedule[-1][2]


def _marginal(row: pd.Series, k: int) -> list[float]:
    return [float(row.get(f"acceptance_pos_{i}", math.nan)) for i in range(1, k + 1)]


def _per_request(requests: list[tuple[list[int], int]], policy) -> list[PolicyResult]:
    """`policy(runs, plain_steps)` on every request's (Trace.runs(), Trace.plain_steps)."""
    return [policy(runs, plain) for runs, plain in requests]


def _pooled_tps(results: list[PolicyResult]) -> float:
    return sum(r.tokens for r in results) / sum(r.seconds for r in results)


def _trace_figures(traces: list[Trace], requests: list[tuple[list[int], int]], cost: StepCost, k_max: int) -> dict:
    """Dynamic policies replayed request by request (HF resets k at every generate call), summed."""
    hf = _per_request(requests, lambda runs, plain: replay_hf(runs, cost, k_max, plain_steps=plain))
    best = _per_request(requests, lambda runs, plain: oracle(runs, cost, k_max, plain_steps=plain))
    pooled = Trace(drafted=tuple(d for t in traces for d in t.drafted), accepted=tuple(a for t in traces for a in t.accepted))
    plain = sum(t.plain_steps for t in traces)
    return {
        "trace_steps": len(pooled.accepted),
        "plain_step_share": plain / (plain + len(pooled.accepted)),
        "accepted_length_distribution": pooled.length_distribution(),
        "hf_heuristic_tg_req_tps": _pooled_tps(hf),
        "hf_heuristic_mean_k": sum(r.mean_k * len(t.accepted) for r, t in zip(hf, traces)) / len(pooled.accepted),
        "oracle_tg_req_tps": _pooled_tps(best),
    }


def _step_mix(row, traces: list[Trace]) -> StepMix | None:
    """The cell's steps per decoded token from its traces (plain steps counted), else from its mean acceptance length."""
    if not row.tg_req_tps_mean > 0:
        return None
    if traces:
        return StepMix(k=int(row.k), plain_steps=fmean(t.plain_steps / t.decoded_tokens for t in traces),
                       drafted_steps=fmean(len(t.accepted) / t.decoded_tokens for t in traces),
                       seconds=1.0 / float(row.tg_req_tps_mean))  # fmt: skip
    if pd.isna(row.mean_acceptance_length) or row.mean_acceptance_length <= 0:
        return None
    return StepMix.without_traces(int(row.k), float(row.mean_acceptance_length), float(row.tg_req_tps_mean))


def _cost_point(cost: StepCost, mix: StepMix) -> CostPoint:
    return CostPoint(k=mix.k, plain_steps_per_token=mix.plain_steps, drafted_steps_per_token=mix.drafted_steps,
                     measured_ms_per_token=1000 * mix.seconds, fitted_ms_per_token=1000 * cost.seconds_per_token(mix))  # fmt: skip


def _group_advice(rows: pd.DataFrame, baseline: pd.DataFrame, traces: dict[tuple, list[Trace]]) -> GroupAdvice | None:
    drafted = rows.dropna(subset=["k", "tg_req_tps_mean"])
    if drafted.empty:
        return None
    first = drafted.iloc[0]
    top = drafted.loc[drafted["k"].idxmax()]
    k_max = int(top["k"])
    marginal = _marginal(top, k_max)
    if any(math.isnan(m) for m in marginal):
        return None
    workload, concurrency = first["workload"], int(first["concurrency"])

    def traces_of(cell_id) -> list[Trace]:
        return [t for t in traces.get((str(cell_id), workload, concurrency), []) if t.accepted]

    mixes = [m for r in drafted.itertuples() if (m := _step_mix(r, traces_of(r.cell_id)))]
    if len(baseline):
        mixes.append(StepMix.no_drafter(float(baseline["tg_req_tps_mean"].mean())))
    cost = fit(mixes)
    chain = drafts_in_chain(first["drafter_kind"])
    top_traces = traces_of(top["cell_id"])
    replayed = chain and bool(top_traces)
    # Each request's positions, walked by every policy below.
    requests = [(t.runs(), t.plain_steps) for t in top_traces]

    def predicted(k: int) -> tuple[float, float]:
        """(per-request t/s, tokens per step) of a fixed-k server."""
        if k == 0:
            return 1.0 / cost.step_time(0), 1.0
        if replayed:
            results = _per_request(requests, lambda runs, plain: fixed_k(runs, cost, k, plain))
            return fmean(r.tg_req_tps for r in results), fmean(r.tokens_per_step for r in results)
        # A parallel drafter's k is its own block: its marginals come from its own cell.
        length = expected_tokens_per_step(marginal if chain else _marginal(drafted[drafted["k"] == k].iloc[0], k), k)
        return fixed_k_tps(length, cost, k), length

    measured = {int(r.k): float(r.tg_req_tps_mean) for r in drafted.itertuples()}
    ks = range(1, k_max + 1) if chain else sorted(measured)
    by_k = {k: predicted(k) for k in (0, *ks)}
    predictions = []
    for k in ks:
        tps, length = by_k[k]
        actual = measured.get(k)
        predictions.append(KPrediction(
            k=k, predicted_tg_req_tps=tps, predicted_tokens_per_step=length,
            measured_tg_req_tps=actual, error_pct=100 * (tps / actual - 1) if actual else None,
        ))  # fmt: skip
    if chain:
        best_k, best_tps = best_fixed_k(lambda k: by_k[k][0], k_max)
    else:
        best = max(predictions, key=lambda p: p.predicted_tg_req_tps)
        best_k, best_tps = best.k, best.predicted_tg_req_tps
        if len(baseline) and 1 / cost.step_time(0) > best_tps:
            best_k, best_tps = 0, 1 / cost.step_time(0)
    return GroupAdvice(
        model=first["model"], quant=first["quant"], drafter=first["drafter"], drafter_kind=first["drafter_kind"],
        workload=workload, concurrency=concurrency, k_max=k_max, marginal=marginal,
        conditional=conditional_from_marginal(marginal), plain_step_ms=1000 * cost.plain_s,
        cost_per_token_ms=1000 * cost.per_token_s, draft_step_fixed_ms=1000 * cost.per_draft_step_s,
        draft_step_fixed_fitted=cost.fixed_cost_fitted, cost_fit_rms_error_pct=cost.rms_error_pct,
        cost_points=[_cost_point(cost, m) for m in sorted(mixes, key=lambda m: m.k)], predictions=predictions,
        best_k=best_k, best_predicted_tg_req_tps=best_tps, acceptance_model="trace replay" if replayed else "marginal",
        note=None if chain else f"{first['drafter_kind']} drafts its block in parallel: only measured k are predicted",
        k_max_cell=str(top["cell_id"]),
        **(_trace_figures(top_traces, requests, cost, k_max) if replayed else {}),
    )  # fmt: skip


def advise(table: pd.DataFrame, sweep: str, max_num_seqs: int | None = None,
           speculative_configs: dict[str, dict] | None = None,
           traces: dict[tuple[str, str, int], list[Trace]] | None = None) -> Advice:  # fmt: skip
    """`speculative_configs`: cell id -> the cell's --speculative-config (the recommendation keeps its method and
    drafter settings and sets the draft length); `traces`: (cell id, workload, concurrency) -> per-request traces."""
    rows = table[(table["status"] == "ok") & table["workload"].notna()]
    served_schedules = rows[rows["k_schedule"].notna()] if "k_schedule" in rows else rows.iloc[0:0]
    rows = rows.drop(served_schedules.index)
    groups = []
    for key, group in rows[rows["drafter_kind"] != "none"].groupby(GROUP, dropna=False):
        model, quant, _, workload, concurrency = key
        baseline = rows[(rows["model"] == model) & (rows["quant"] == quant) & (rows["drafter_kind"] == "none")
                        & (rows["workload"] == workload) & (rows["concurrency"] == concurrency)]  # fmt: skip
        try:
            advice = _group_advice(group, baseline, traces or {})
        except ValueError:
            continue  # one k and no baseline: nothing to fit
        if advice is not None:
            groups.append(advice)
    recommendations = []
    by_config: dict[tuple, dict[int, GroupAdvice]] = {}
    for advice in groups:
        by_config.setdefault((advice.model, advice.quant, advice.drafter, advice.workload), {})[advice.concurrency] = advice
    for (model, quant, drafter, workload), levels in sorted(by_config.items()):
        best = {c: a.best_k for c, a in sorted(levels.items())}
        low = levels[min(levels)]
        config = dict((speculative_configs or {}).get(low.k_max_cell) or {"method": low.drafter_kind})
        # vLLM's schedule values are bounded by num_speculative_tokens, the k the server is started with.
        config["num_speculative_tokens"] = max(max(best.values()), 1)
        if len(set(best.values())) > 1:
            config["num_speculative_tokens_per_batch_size"] = batch_size_schedule(best, max_num_seqs or max(best))
        recommendations.append(Recommendation(model=model, quant=quant, drafter=drafter, workload=workload,
                                              best_k_by_concurrency=best, speculative_config=config,
                                              k_max_cell=low.k_max_cell))  # fmt: skip
    checks = []
    by_group = {(a.model, a.quant, a.drafter, a.workload, a.concurrency): a for a in groups}
    for row in served_schedules.itertuples():
        schedule = json.loads(row.k_schedule)
        k = k_in_effect(schedule, int(row.concurrency))
        group = by_group.get((row.model, row.quant, row.drafter, row.workload, int(row.concurrency)))
        predicted = next((p.predicted_tg_req_tps for p in group.predictions if p.k == k), None) if group else None
        measured = float(row.tg_req_tps_mean)
        checks.append(ScheduleCheck(
            cell_id=str(row.cell_id), model=row.model, quant=row.quant, drafter=row.drafter, workload=row.workload,
            concurrency=int(row.concurrency), schedule=schedule, k=k, predicted_tg_req_tps=predicted,
            measured_tg_req_tps=measured, error_pct=100 * (predicted / measured - 1) if predicted else None,
        ))  # fmt: skip
    return Advice(sweep=sweep, groups=groups, recommendations=recommendations, schedule_checks=checks)


def markdown(advice: Advice) -> str:
    lines = [f"# specsweep advise: {advice.sweep}", "",
             "Predicted per-request tg t/s for every k from the k_max cell's acceptance (its per-request traces "
             "replayed at each k where it has them) and the fitted step cost: a verify step that drafts d tokens costs "
             "plain + fixed + per-token·d, one that drafts nothing costs plain; measured where a cell ran.", ""]  # fmt: skip
    for g in advice.groups:
        fixed = f"{g.draft_step_fixed_ms:+.2f} ms fixed" if g.draft_step_fixed_fitted else "no fixed cost (not fitted)"
        share = "" if g.plain_step_share is None else f"; {100 * g.plain_step_share:.0f} % of the k_max cell's steps drafted nothing"
        lines += [f"## {g.quant} / {g.drafter} / {g.workload} c{g.concurrency}", "",
                  f"step cost: plain {g.plain_step_ms:.2f} ms, drafted {fixed} + {g.cost_per_token_ms:.2f} ms per "
                  f"token (fit RMS error {g.cost_fit_rms_error_pct:.1f} % over k in "
                  f"{[p.k for p in g.cost_points]}){share}"
                  + "; marginal acceptance " + ", ".join(f"{m:.2f}" for m in g.marginal)
                  + f"; tokens per step by {g.acceptance_model}",
                  "", "| k | predicted t/s | measured t/s | error % |", "|---:|---:|---:|---:|"]  # fmt: skip
        for p in g.predictions:
            measured = "" if p.measured_tg_req_tps is None else f"{p.measured_tg_req_tps:.2f}"
            error = "" if p.error_pct is None else f"{p.error_pct:+.1f}"
            lines.append(f"| {p.k} | {p.predicted_tg_req_tps:.2f} | {measured} | {error} |")
        lines += ["", f"best k: {g.best_k} ({g.best_predicted_tg_req_tps:.2f} t/s predicted)"]
        if g.hf_heuristic_tg_req_tps is not None:
            lines += [f"dynamic k on the measured trace ({g.trace_steps} steps): HF heuristic {g.hf_heuristic_tg_req_tps:.2f} "
                      f"t/s (mean k {g.hf_heuristic_mean_k:.2f}), oracle bound {g.oracle_tg_req_tps:.2f} t/s"]  # fmt: skip
        lines += [""]
    if advice.recommendations:
        lines += ["## Recommended --speculative-config", ""]
        for r in advice.recommendations:
            lines.append(f"- {r.quant} / {r.drafter} / {r.workload}: `{json.dumps(r.speculative_config)}`")
    if advice.schedule_checks:
        lines += ["", "## Served schedules: predicted vs measured", "",
                  "Per workload and concurrency, the k the schedule sets there and the fixed-k prediction for it.", "",
                  "| cell | workload | c | k | predicted t/s | measured t/s | error % |",
                  "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for c in advice.schedule_checks:
            predicted = "" if c.predicted_tg_req_tps is None else f"{c.predicted_tg_req_tps:.2f}"
            error = "" if c.error_pct is None else f"{c.error_pct:+.1f}"
            lines.append(f"| {c.cell_id} | {c.workload} | {c.concurrency} | {c.k} | {predicted} | "
                         f"{c.measured_tg_req_tps:.2f} | {error} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def load_traces(sweep_dir: Path, cell_ids) -> tuple[dict[str, dict], dict[tuple[str, str, int], list[Trace]]]:
    """Each cell's --speculative-config and its per-request traces, from its bench.json."""
    configs, traces = {}, {}
    for cell_id in cell_ids:
        bench = Path(sweep_dir) / str(cell_id) / "bench.json"
        if not bench.is_file():
            continue
        record = json.loads(bench.read_text())
        if text := record.get("speculative_config"):
            configs[str(cell_id)] = json.loads(text)
        for workload in record.get("workloads", []):
            traces[(str(cell_id), workload["workload"], int(workload["concurrency"]))] = [
                Trace.from_request(r["spec_per_step_drafted"], r["spec_per_step_accepted"], r["completion_tokens"])
                for r in workload["requests"] if r.get("ok") and r.get("spec_per_step_accepted")
            ]
    return configs, traces


def advise_sweep_dir(sweep_dir: Path, max_num_seqs: int | None = None) -> Advice:
    sweep_dir = Path(sweep_dir)
    table = pd.read_csv(sweep_dir / "table.csv")
    sweep = str(table["sweep"].dropna().iloc[0]) if table["sweep"].notna().any() else sweep_dir.name
    configs, traces = load_traces(sweep_dir, table["cell_id"].dropna().unique())
    return advise(table, sweep, max_num_seqs, configs, traces)
