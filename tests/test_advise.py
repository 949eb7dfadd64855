"""The k-advisor's algebra on hand-computed numbers: acceptance (marginal <-> conditional, expected tokens for
k < k_max, traces), the step-cost fit, the policies (fixed k, HF's heuristic replayed, oracle), the batch-size
schedule, and the advice built from a table."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from specsweep.advise.acceptance import (
    Trace,
    conditional_from_marginal,
    expected_tokens_per_step,
    marginal_from_conditional,
)
from specsweep.advise.advice import advise
from specsweep.advise.cost import StepCost, fit
from specsweep.advise.policies import batch_size_schedule, best_fixed_k, fixed_k_tps, oracle, replay_hf
from specsweep.config.compose import compose_cell
from specsweep.images.base import build_image

COST = StepCost(intercept_s=0.010, per_token_s=0.002, points=((0, 0.010), (3, 0.016)))
TRACE = Trace(drafted=(3, 3, 3, 3), accepted=(3, 1, 0, 2))


def test_marginal_and_conditional_convert_both_ways():
    assert conditional_from_marginal([0.8, 0.6, 0.3]) == pytest.approx([0.8, 0.75, 0.5])
    assert marginal_from_conditional([0.8, 0.75, 0.5]) == pytest.approx([0.8, 0.6, 0.3])
    assert math.isnan(conditional_from_marginal([0.5, 0.0, 0.0])[2])


def test_expected_tokens_for_every_k_up_to_k_max():
    assert expected_tokens_per_step([0.8, 0.6, 0.3], 0) == 1
    assert expected_tokens_per_step([0.8, 0.6, 0.3], 2) == pytest.approx(2.4)
    with pytest.raises(ValueError, match="measure at a larger k"):
        expected_tokens_per_step([0.8, 0.6, 0.3], 4)


def test_trace_marginal_and_length_distribution():
    assert TRACE.marginal() == pytest.approx([0.75, 0.5, 0.25])
    assert TRACE.length_distribution() == pytest.approx([0.25] * 4)
    # E[min(A, 2)] over the steps = m_1 + m_2: the k < k_max prediction from one k_max run.
    assert sum(min(a, 2) for a in TRACE.accepted) / 4 == pytest.approx(sum(TRACE.marginal()[:2]))
    with pytest.raises(ValueError):
        Trace(drafted=(2,), accepted=(3,))


def test_step_cost_fit():
    cost = fit([(0, 0.010), (2, 0.014), (4, 0.018)])
    assert (cost.intercept_s, cost.per_token_s, cost.rms_error_pct) == pytest.approx((0.010, 0.002, 0.0))
    noisy = fit([(0, 0.010), (2, 0.015), (4, 0.018)])
    assert noisy.rms_error_pct > 0
    with pytest.raises(ValueError, match="two or more k"):
        fit([(4, 0.02), (4, 0.021)])


def test_fixed_k_prediction_by_hand():
    # k=2: 1 + .75 + .5 = 2.25 tokens per step of 10 + 2*2 = 14 ms.
    assert fixed_k_tps([0.75, 0.5, 0.25], COST, 2) == pytest.approx(2.25 / 0.014)
    assert best_fixed_k([0.75, 0.5, 0.25], COST, 3) == (2, pytest.approx(2.25 / 0.014))
    # Poor acceptance: drafting loses, k = 0 (no drafter) is best.
    assert best_fixed_k([0.05, 0.0, 0.0], COST, 3)[0] == 0


def test_hf_heuristic_replayed_on_a_trace_by_hand():
    # k=3 accepts 3 (all: k stays at the cap 3), k=3 accepts 1 (k->2), k=2 accepts 0 (k->1), k=1 accepts min(2,1)=1
    # (all: k->3). Tokens 4+2+1+2 = 9; time 16+16+14+12 = 58 ms.
    result = replay_hf(TRACE, COST)
    assert (result.tokens, result.seconds, result.mean_k) == pytest.approx((9, 0.058, 2.25))
    assert result.tg_req_tps == pytest.approx(9 / 0.058)
    # From k=1: accepts 1 (k->3), 1 of 3 (k->2), 0 of 2 (k->1), 1 of 1.
    assert replay_hf(TRACE, COST, k_start=1).tokens == pytest.approx(2 + 2 + 1 + 2)


def test_oracle_drafts_exactly_what_is_accepted():
    result = oracle(TRACE, COST)
    assert (result.tokens, result.seconds) == pytest.approx((10, 0.016 + 0.012 + 0.010 + 0.014))
    assert result.tg_req_tps >= replay_hf(TRACE, COST).tg_req_tps
    assert result.tg_req_tps >= max(fixed_k_tps(TRACE.marginal(), COST, k) for k in (1, 2, 3))
    # Drafting dearer than a plain step's tokens: the bound is never drafting (1 token per 1 ms), not A_t.
    dear = StepCost(intercept_s=0.001, per_token_s=0.010, points=())
    assert oracle(TRACE, dear).tg_req_tps == pytest.approx(1 / 0.001) and oracle(TRACE, dear).mean_k == 0
    assert oracle(TRACE, dear).tg_req_tps >= replay_hf(TRACE, dear).tg_req_tps


def test_batch_size_schedule_from_per_concurrency_optima():
    assert batch_size_schedule({1: 4, 2: 4, 4: 2}, 8) == [[1, 3, 4], [4, 8, 2]]
    assert batch_size_schedule({2: 3}, 4) == [[1, 4, 3]]
    assert batch_size_schedule({1: 5, 4: 1}, 4) == [[1, 3, 5], [4, 4, 1]]


def _row(cell: str, k, concurrency: int, tg_req: float, length: float, marginal: list[float], kind="ngram") -> dict:
    return {"sweep": "s", "cell_id": cell, "model": "m", "quant": "q", "drafter": kind, "drafter_kind": kind,
            "k": k, "status": "ok", "workload": "w", "concurrency": concurrency, "tg_req_tps_mean": tg_req,
            "mean_acceptance_length": length,
            **{f"acceptance_pos_{i}": rate for i, rate in enumerate(marginal, start=1)}}  # fmt: skip


def test_advice_from_a_table_predicts_every_k_and_recommends_a_schedule():
    # Step cost 10 + 2k ms at c1 and 10 + 6k ms at c4; marginal (.75, .5, .25) from the k=3 cell.
    m = [0.75, 0.5, 0.25]
    rows = [_row("none", None, 1, 100.0, 1.0, [], "none"), _row("k3", 3, 1, 2.5 / 0.016, 2.5, m),
            _row("none", None, 4, 100.0, 1.0, [], "none"), _row("k3", 3, 4, 2.5 / 0.028, 2.5, m)]  # fmt: skip
    advice = advise(pd.DataFrame(rows), "s", max_num_seqs=4, speculative_configs={"k3": {"method": "ngram", "num_speculative_tokens": 3}})
    c1, c4 = sorted(advice.groups, key=lambda g: g.concurrency)
    assert (c1.cost_intercept_ms, c1.cost_per_token_ms) == pytest.approx((10, 2))
    assert [p.k for p in c1.predictions] == [1, 2, 3]
    assert c1.predictions[1].predicted_tg_req_tps == pytest.approx(2.25 / 0.014)
    assert c1.predictions[2].error_pct == pytest.approx(0, abs=1e-9) and c1.predictions[0].measured_tg_req_tps is None
    assert c1.best_k == 2 and c4.best_k == 1  # 1.75/16 ms > 2.25/22 ms > 1/10 ms at c4
    (recommendation,) = advice.recommendations
    assert recommendation.speculative_config == {"method": "ngram", "num_speculative_tokens": 2,
                                                 "num_speculative_tokens_per_batch_size": [[1, 3, 2], [4, 4, 1]]}


@pytest.mark.slow
def test_vllms_own_validator_accepts_the_schedule() -> None:
    """The schedule specsweep recommends goes through vLLM's own Dynamic SD validator, in the CPU vLLM env."""
    python = Path(build_image(compose_cell([]).cell.image).location) / "bin" / "python"
    program = ("import json, sys\nfrom vllm.v1.spec_decode.dynamic.utils import validate_and_normalize_dynamic_sd_schedule\n"
               "print(json.dumps(validate_and_normalize_dynamic_sd_schedule(json.loads(sys.argv[1]))))")
    for schedule in (batch_size_schedule({1: 4, 2: 3, 4: 1}, 4), batch_size_schedule({1: 5, 8: 0}, 16)):
        result = subprocess.run([str(python), "-c", program, json.dumps(schedule)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout.strip().splitlines()[-1]) == schedule
    # A schedule vLLM refuses is refused here too: the check can fail.
    bad = subprocess.run([str(python), "-c", program, json.dumps([[2, 4, 3]])], capture_output=True, text=True)
    assert bad.returncode != 0 and "must start at 1" in bad.stderr


def test_advice_replays_dynamic_policies_on_the_k_max_cells_traces():
    m = [0.75, 0.5, 0.25]
    rows = [_row("none", None, 1, 100.0, 1.0, [], "none"), _row("k1", 1, 1, 1.75 / 0.012, 1.75, [0.75]),
            _row("k3", 3, 1, 2.5 / 0.016, 2.5, m)]  # fmt: skip
    traces = {("k3", "w", 1): [TRACE, Trace(drafted=(3, 3), accepted=(0, 3))]}
    (group,) = advise(pd.DataFrame(rows), "s", traces=traces).groups
    cost = StepCost(intercept_s=group.cost_intercept_ms / 1000, per_token_s=group.cost_per_token_ms / 1000, points=())
    hf = [replay_hf(t, cost) for t in traces[("k3", "w", 1)]]
    assert group.trace_steps == 6
    assert group.hf_heuristic_tg_req_tps == pytest.approx(sum(r.tokens for r in hf) / sum(r.seconds for r in hf))
    assert group.oracle_tg_req_tps >= group.hf_heuristic_tg_req_tps
    assert group.accepted_length_distribution == pytest.approx([2 / 6, 1 / 6, 1 / 6, 2 / 6])


def _cell(k: int, marginal: list[float], cost: StepCost, workloads=(("a", 1), ("a", 2), ("b", 1))) -> pd.DataFrame:
    """Rows of a cell measured exactly as the model says (chain drafter, linear step cost)."""
    rows = []
    for workload, concurrency in workloads:
        scale = 1.0 if concurrency == 1 else 1.3  # a bigger batch: slower steps
        length = expected_tokens_per_step(marginal, k)
        tps = length / (cost.step_time(k) * scale)
        kind = "none" if k == 0 else "ngram"
        row = _row(f"k{k}", k or None, concurrency, tps, length, marginal[:k] if k else [], kind)
        rows.append({**row, "workload": workload})
    return pd.DataFrame(rows)


def test_adaptive_search_finds_the_brute_force_best_with_few_cells():
    from specsweep.advise.adaptive import objective, search

    marginal = [0.9, 0.8, 0.7, 0.55, 0.4, 0.3, 0.2]
    cost = StepCost(intercept_s=0.050, per_token_s=0.006, points=())
    brute = {k: objective(_cell(k, marginal, cost)) for k in range(0, 8)}
    result = search(lambda ks: {k: _cell(k, marginal, cost) for k in ks}, k_max=7)
    assert result.best_k == max(brute, key=brute.get)
    # Exact predictions: k_max, k=1, the baseline and the predicted best are all it measures.
    assert result.order == [0, 1, 7, result.best_k]
    assert result.predicted[result.best_k] == pytest.approx(brute[result.best_k], rel=1e-6)
    # The predicted best measured slower than predicted (its step is 10 ms dearer than the fit): the search moves on
    # and ends within TOLERANCE of the true best of that world.
    def skewed_cell(k: int) -> pd.DataFrame:
        return _cell(k, marginal, cost if k != 5 else StepCost(0.060, 0.006, ()))

    truth = {k: objective(skewed_cell(k)) for k in range(0, 8)}
    skewed = search(lambda ks: {k: skewed_cell(k) for k in ks}, k_max=7)
    assert skewed.best_k != 5 and truth[skewed.best_k] >= max(truth.values()) * (1 - 0.03)


def test_adaptive_driver_rounds_plan_only_what_the_search_needs(tmp_path: Path):
    from specsweep.advise.driver import AdaptiveState, adapt, first_round, planned, state_path
    from specsweep.config.grid import expand

    cells = expand([], "k_advisor")
    marginal = [0.9, 0.8, 0.7, 0.55, 0.4, 0.3, 0.2]
    cost = StepCost(intercept_s=0.050, per_token_s=0.006, points=())
    runs = []

    def run_snakemake() -> None:
        # What Snakemake would do: measure the planned cells, write the table.
        plan = planned(cells, tmp_path)
        runs.append(sorted(c.id for c in plan))
        frames = []
        for cell in plan:
            k = 0 if cell.config.drafter.kind == "none" else cell.config.k
            frames.append(_cell(k, marginal, cost).assign(cell_id=cell.id))
        pd.concat(frames).to_csv(tmp_path / "table.csv", index=False)

    assert first_round(cells) == ["gemma3_270m-bf16-ngram-k1", "gemma3_270m-bf16-ngram-k7", "gemma3_270m-bf16-none"]
    state = adapt(cells, tmp_path, run_snakemake)
    brute = {k: objective_of(k, marginal, cost) for k in range(0, 8)}
    (group,) = state.groups.values()
    assert group.best_k == max(brute, key=brute.get) and state.done
    assert runs[0] == first_round(cells) and len(runs) == 2 and len(state.cells) == 4
    assert AdaptiveState.model_validate_json(state_path(tmp_path).read_text()).cells == state.cells


def objective_of(k: int, marginal: list[float], cost: StepCost) -> float:
    from specsweep.advise.adaptive import objective

    return objective(_cell(k, marginal, cost))
