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
    replay,
)
from specsweep.advise.advice import advise, markdown
from specsweep.advise.cost import StepCost, StepMix, fit
from specsweep.advise.policies import batch_size_schedule, best_fixed_k, fixed_k, fixed_k_tps, oracle, replay_hf
from specsweep.config.compose import compose_cell
from specsweep.images.base import build_image

COST = StepCost(plain_s=0.010, per_token_s=0.002)
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


def test_runs_rebuild_every_position_and_replay_lands_where_a_smaller_k_would():
    # Step 0 accepted all 3 and step 1 accepted 1: the run from position 0 is 3 + bonus + 1 = 5 long.
    runs = TRACE.runs()
    assert runs == [5, 4, 3, 2, 1, 0, 0, 2, 1, 0] and len(runs) == sum(a + 1 for a in TRACE.accepted)
    # At the traced k the replay is the trace itself.
    assert replay(runs, 3) == (4, 6)
    # k=2 lands at position 3 (run 2) inside the long run: 4 steps, 6 accepted, 2.5 tokens per step where
    # 1 + m_1 + m_2 says 2.25. k=1: 6 steps (positions 0, 2, 4, 6, 7, 9).
    assert replay(runs, 2) == (4, 6) and expected_tokens_per_step(TRACE.marginal(), 2) == pytest.approx(2.25)
    assert replay(runs, 1) == (6, 4)


def _mix(k: int, plain: float, drafted: float, cost: StepCost) -> StepMix:
    """A cell measured exactly as the model says: its steps per decoded token at their step times."""
    return StepMix(k, plain, drafted, plain * cost.step_time(0) + drafted * cost.step_time(k))


def test_a_trace_counts_the_steps_that_drafted_nothing():
    # 14 tokens: the prefill's, 4 drafted steps emitting 4 + 2 + 1 + 3 = 10, so 3 plain steps vLLM did not list.
    trace = Trace.from_request([3, 3, 3, 3], [3, 1, 0, 2], completion_tokens=14)
    assert (trace.plain_steps, trace.decoded_tokens) == (3, 13)
    # A request cut short by max_tokens inside a step never counts negative plain steps.
    assert Trace.from_request([3], [3], completion_tokens=3).plain_steps == 0


def test_step_cost_fit_with_plain_steps():
    truth = StepCost(plain_s=0.010, per_token_s=0.002)
    # No drafter (1 plain step per token) and k = 4 with half its steps plain: the two identify the model.
    cost = fit([StepMix.no_drafter(100.0), _mix(4, 0.2, 0.2, truth)])
    assert (cost.plain_s, cost.per_token_s, cost.per_draft_step_s, cost.rms_error_pct) == pytest.approx((0.010, 0.002, 0, 0))
    assert not cost.fixed_cost_fitted and cost.step_time(0) == pytest.approx(0.010)
    # The plain steps are what a line through drafted steps alone reads as a fixed cost of speculating: counted as
    # drafting at every step (k = 2 and 4, 2.5 and 3.5 tokens per drafted step), the same cells give a line
    # meeting k = 0 well above the plain step.
    cells = [_mix(2, 0.2, 0.25, truth), _mix(4, 0.2, 0.2, truth)]
    as_if_always_drafting = fit([StepMix(m.k, 0.0, m.drafted_steps, m.seconds) for m in cells])
    assert as_if_always_drafting.step_time(0) > 0.015 and fit(cells).plain_s == pytest.approx(0.010)
    # Three drafted k: a fixed cost per drafted step is fitted.
    dear = StepCost(plain_s=0.010, per_token_s=0.002, per_draft_step_s=0.005)
    fitted = fit([StepMix.no_drafter(100.0)] + [_mix(k, 0.1, 1 / (k + 1), dear) for k in (1, 3, 5)])
    assert fitted.fixed_cost_fitted and (fitted.plain_s, fitted.per_token_s, fitted.per_draft_step_s) == pytest.approx((0.010, 0.002, 0.005))
    noisy = fit([StepMix.no_drafter(100.0), _mix(2, 0.0, 0.4, truth), StepMix(4, 0.0, 0.3, 0.0063)])
    assert noisy.rms_error_pct > 0
    # A drafter that always drafts and no no-drafter cell: nothing tells the fixed cost from the plain step, so it
    # is not fitted even with three k (the plain step then holds it).
    always = fit([_mix(k, 0.0, 1 / (k + 1), dear) for k in (1, 3, 5)])
    assert not always.fixed_cost_fitted and always.plain_s == pytest.approx(0.015) and always.step_time(3) == pytest.approx(0.021)
    with pytest.raises(ValueError, match="measure no drafter and k_max"):
        fit([_mix(4, 0.0, 0.3, truth), _mix(4, 0.0, 0.31, truth)])


def test_fixed_k_prediction_by_hand():
    # k=2: 1 + .75 + .5 = 2.25 tokens per step of 10 + 2*2 = 14 ms.
    m = [0.75, 0.5, 0.25]
    assert fixed_k_tps(expected_tokens_per_step(m, 2), COST, 2) == pytest.approx(2.25 / 0.014)
    assert best_fixed_k(lambda k: fixed_k_tps(expected_tokens_per_step(m, k), COST, k), 3) == (2, pytest.approx(2.25 / 0.014))
    # Poor acceptance: drafting loses, k = 0 (no drafter) is best.
    assert best_fixed_k(lambda k: fixed_k_tps(expected_tokens_per_step([0.05, 0.0, 0.0], k), COST, k), 3)[0] == 0
    # On the trace with 3 plain steps: k=2 replays 4 drafted steps (6 accepted) + 3 plain = 13 tokens in
    # 4 * 14 + 3 * 10 = 86 ms.
    trace = Trace.from_request([3, 3, 3, 3], [3, 1, 0, 2], completion_tokens=14)
    result = fixed_k(trace.runs(), COST, 2, trace.plain_steps)
    assert (result.tokens, result.seconds, result.steps) == pytest.approx((13, 0.086, 7))


def test_hf_heuristic_replayed_on_the_runs_by_hand():
    # Positions 0 (run 5), 4 (1), 6 (0), 7 (2), 9 (0): k 3 accepts 3 (all: stays at the cap 3), k 3 accepts 1
    # (k->2), k 2 accepts 0 (k->1), k 1 accepts 1 (all: k->3), k 3 accepts 0. Time 16+16+14+12+16 = 74 ms.
    result = replay_hf(TRACE.runs(), COST, 3)
    assert (result.tokens, result.seconds, result.mean_k) == pytest.approx((10, 0.074, 2.4))
    assert result.tg_req_tps == pytest.approx(10 / 0.074)
    # Plain steps (no draft proposed) are paid at the plain step under every policy.
    plain = replay_hf(TRACE.runs(), COST, 3, plain_steps=3)
    assert (plain.tokens, plain.seconds, plain.mean_k, plain.steps) == pytest.approx((13, 0.104, 2.4, 8))
    # From k=1: positions 0 (k1 accepts 1 -> 3), 2 (k3 accepts 3), 6 (k3 accepts 0 -> 2), 7 (k2 accepts 2).
    assert replay_hf(TRACE.runs(), COST, 3, k_start=1).seconds == pytest.approx(0.012 + 0.016 + 0.016 + 0.014)


def _exhaustive_best(runs: list[int], cost: StepCost, k_max: int) -> float:
    """Every path of draft lengths over the positions, enumerated: the best tokens / seconds."""
    best = 0.0

    def walk(position: int, seconds: float) -> None:
        nonlocal best
        if position >= len(runs):
            best = max(best, len(runs) / seconds)
            return
        for k in range(0, min(runs[position], k_max) + 1):
            walk(position + k + 1, seconds + cost.step_time(k))

    walk(0, 0.0)
    return best


def test_oracle_is_the_best_of_every_path():
    runs = TRACE.runs()
    result = oracle(runs, COST, 3)
    # Draft 3 at 0, 1 at 4, 0 at 6, 2 at 7: 10 tokens in 16 + 12 + 10 + 14 ms.
    assert (result.tokens, result.seconds) == pytest.approx((10, 0.052))
    assert result.tg_req_tps == pytest.approx(_exhaustive_best(runs, COST, 3))
    assert result.tg_req_tps >= replay_hf(runs, COST, 3).tg_req_tps
    assert result.tg_req_tps >= max(len(runs) / (replay(runs, k)[0] * COST.step_time(k)) for k in (1, 2, 3))
    # Drafting dearer than a plain step's tokens: the bound is never drafting (1 token per 1 ms).
    dear = StepCost(plain_s=0.001, per_token_s=0.010)
    assert oracle(runs, dear, 3).tg_req_tps == pytest.approx(1 / 0.001) and oracle(runs, dear, 3).mean_k == 0
    # A fixed cost per drafted step: short runs are better not drafted, and no simple rule says which; the ratio
    # method still finds the best path.
    overhead = StepCost(plain_s=0.010, per_token_s=0.002, per_draft_step_s=0.006)
    for trace_runs in (runs, [2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 1, 0, 0, 3, 2, 1, 0]):
        assert oracle(trace_runs, overhead, 4).tg_req_tps == pytest.approx(_exhaustive_best(trace_runs, overhead, 4))


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
    assert (c1.plain_step_ms, c1.cost_per_token_ms, c1.draft_step_fixed_ms) == pytest.approx((10, 2, 0))
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
    # One vLLM import for every schedule: each is validated and answered on its own line.
    program = ("import json, sys\nfrom vllm.v1.spec_decode.dynamic.utils import validate_and_normalize_dynamic_sd_schedule\n"
               "for schedule in json.loads(sys.argv[1]):\n"
               "    try:\n"
               "        print(json.dumps({'ok': validate_and_normalize_dynamic_sd_schedule(schedule)}))\n"
               "    except Exception as err:\n"
               "        print(json.dumps({'error': str(err)}))\n")
    good = [batch_size_schedule({1: 4, 2: 3, 4: 1}, 4), batch_size_schedule({1: 5, 8: 0}, 16)]
    # A schedule vLLM refuses is refused here too: the check can fail.
    bad = [[2, 4, 3]]
    result = subprocess.run([str(python), "-c", program, json.dumps([*good, bad])], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = [json.loads(line) for line in result.stdout.strip().splitlines()[-3:]]
    assert answers[:2] == [{"ok": schedule} for schedule in good]
    assert "must start at 1" in answers[2]["error"]


def test_advice_replays_dynamic_policies_on_the_k_max_cells_traces():
    m = [0.75, 0.5, 0.25]
    rows = [_row("none", None, 1, 100.0, 1.0, [], "none"), _row("k1", 1, 1, 1.75 / 0.012, 1.75, [0.75]),
            _row("k3", 3, 1, 2.5 / 0.016, 2.5, m)]  # fmt: skip
    traces = {("k3", "w", 1): [TRACE, Trace(drafted=(3, 3), accepted=(0, 3))]}
    (group,) = advise(pd.DataFrame(rows), "s", traces=traces).groups
    cost = StepCost(plain_s=group.plain_step_ms / 1000, per_token_s=group.cost_per_token_ms / 1000)
    hf = [replay_hf(t.runs(), cost, 3) for t in traces[("k3", "w", 1)]]
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
    cost = StepCost(plain_s=0.050, per_token_s=0.006)
    brute = {k: objective(_cell(k, marginal, cost)) for k in range(0, 8)}
    result = search(lambda ks: {k: _cell(k, marginal, cost) for k in ks}, k_max=7)
    assert result.best_k == max(brute, key=brute.get)
    # Exact predictions: the baseline, k_max and the predicted best are all it measures.
    assert result.order == [0, 7, result.best_k]
    assert result.predicted[result.best_k] == pytest.approx(brute[result.best_k], rel=1e-6)
    # The predicted best measured slower than predicted (its step is 10 ms dearer than the fit): the search moves on
    # and ends within TOLERANCE of the true best of that world.
    def skewed_cell(k: int) -> pd.DataFrame:
        return _cell(k, marginal, cost if k != 5 else StepCost(0.050, 0.006, per_draft_step_s=0.010))

    truth = {k: objective(skewed_cell(k)) for k in range(0, 8)}
    skewed = search(lambda ks: {k: skewed_cell(k) for k in ks}, k_max=7)
    assert skewed.best_k != 5 and truth[skewed.best_k] >= max(truth.values()) * (1 - 0.03)


def test_adaptive_search_needs_only_k_max_when_the_trace_counts_the_plain_steps():
    """ngram: long runs where the prompt repeats, stretches without a match between them (40 plain steps of 82
    tokens). From the no-drafter cell and k_max's trace the model predicts every k, so the search measures two
    cells and stops at the brute-force best."""
    from specsweep.advise.adaptive import objective, predicted_objective, search

    trace = Trace.from_request([7] * 6, [7, 5, 7, 6, 7, 4], completion_tokens=83)
    truth = StepCost(plain_s=0.050, per_token_s=0.002)

    def cell(k: int) -> pd.DataFrame:
        if k == 0:
            return pd.DataFrame([_row("k0", None, 1, 1 / truth.step_time(0), 1.0, [], "none")])
        result = fixed_k(trace.runs(), truth, k, trace.plain_steps)
        drafted = result.steps - trace.plain_steps
        return pd.DataFrame([_row(f"k{k}", k, 1, result.tg_req_tps, (result.tokens - trace.plain_steps) / drafted,
                                  trace.marginal()[:k])])  # fmt: skip

    brute = {k: objective(cell(k)) for k in range(0, 8)}
    result = search(lambda ks: {k: cell(k) for k in ks}, k_max=7,
                    predict=lambda table: predicted_objective(table, 7, {("k7", "w", 1): [trace]}))  # fmt: skip
    assert result.order == [0, 7] and result.best_k == max(brute, key=brute.get)
    assert all(result.predicted[k] == pytest.approx(brute[k]) for k in range(1, 8))


def test_adaptive_driver_rounds_plan_only_what_the_search_needs(tmp_path: Path):
    from specsweep.advise.driver import adapt, first_round, planned, state_path
    from specsweep.config.grid import expand
    from specsweep.records.adaptive import AdaptiveState

    cells = expand([], "k_advisor")
    marginal = [0.9, 0.8, 0.7, 0.55, 0.4, 0.3, 0.2]
    cost = StepCost(plain_s=0.050, per_token_s=0.006)
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

    assert first_round(cells) == ["gemma3_270m-bf16-ngram-k7", "gemma3_270m-bf16-none"]
    # Without a no-drafter cell k = 1 anchors the step cost.
    assert first_round([c for c in cells if c.config.drafter.kind != "none"]) == [
        "gemma3_270m-bf16-ngram-k1", "gemma3_270m-bf16-ngram-k7"]
    state = adapt(cells, tmp_path, run_snakemake)
    brute = {k: objective_of(k, marginal, cost) for k in range(0, 8)}
    (group,) = state.groups.values()
    assert group.best_k == max(brute, key=brute.get) and state.done
    assert runs[0] == first_round(cells) and len(runs) == 2 and len(state.cells) == 3
    assert AdaptiveState.model_validate_json(state_path(tmp_path).read_text()).cells == state.cells


def objective_of(k: int, marginal: list[float], cost: StepCost) -> float:
    from specsweep.advise.adaptive import objective

    return objective(_cell(k, marginal, cost))


def test_adaptive_driver_serves_the_recommended_schedule_and_the_advice_checks_it(tmp_path: Path):
    """Drafting is cheap at batch size 1 and dear at 2: the best k differs, so the last round serves the schedule
    as a cell, and the advice compares that cell with the fixed-k predictions at the k in effect."""
    from specsweep.advise.advice import advise_sweep_dir, k_in_effect
    from specsweep.advise.driver import adapt, planned
    from specsweep.config.grid import expand

    cells = expand([], "k_advisor")
    marginal = [0.9, 0.8, 0.7, 0.55, 0.4, 0.3, 0.2]
    costs = {1: StepCost(0.050, 0.004), 2: StepCost(0.050, 0.030)}
    served = []

    def run_snakemake() -> None:
        rows = []
        for cell in planned(cells, tmp_path):
            schedule = cell.config.k_schedule
            served.append(cell.id)
            for concurrency in (1, 2):
                k = 0 if cell.config.drafter.kind == "none" else k_in_effect(schedule, concurrency) if schedule else cell.config.k
                length = expected_tokens_per_step(marginal, k)
                kind = "none" if k == 0 and not schedule else "ngram"
                row = _row(cell.id, None if kind == "none" else cell.config.k, concurrency,
                           length / costs[concurrency].step_time(k), length, marginal[:k], kind)  # fmt: skip
                rows.append({**row, "k_schedule": json.dumps(schedule) if schedule else None})
        pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)

    state = adapt(cells, tmp_path, run_snakemake)
    (overrides,) = state.schedule_cells
    schedule_cell = planned(cells, tmp_path)[-1]
    assert schedule_cell.config.k_schedule is not None and schedule_cell.id in served
    assert overrides[-1] == "k_schedule=" + json.dumps(schedule_cell.config.k_schedule, separators=(",", ":"))
    # Batch size 1 drafts more than batch size 2, and the schedule covers both.
    assert k_in_effect(schedule_cell.config.k_schedule, 1) > k_in_effect(schedule_cell.config.k_schedule, 2) >= 0
    advice = advise_sweep_dir(tmp_path)
    assert {(c.workload, c.concurrency) for c in advice.schedule_checks} == {("w", 1), ("w", 2)}
    # Measured exactly as the model says: no error; the schedule cell is no group's fixed-k cell.
    assert all(c.error_pct == pytest.approx(0, abs=1e-9) for c in advice.schedule_checks)
    assert all(g.k_max_cell != schedule_cell.id for g in advice.groups)
    assert "Served schedules: predicted vs measured" in markdown(advice)


def test_the_plan_of_an_adaptive_sweep_holds_its_served_schedule_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from specsweep.advise.driver import state_path
    from specsweep.records.adaptive import AdaptiveState
    from specsweep.workflow_plan import plan_sweep

    monkeypatch.chdir(tmp_path)
    overrides = ["sweep=k_advisor", "sweep.strategy=adaptive"]
    first = plan_sweep(overrides)
    assert sorted(first.cells) == ["gemma3_270m-bf16-ngram-k7", "gemma3_270m-bf16-none"]
    schedule = ["drafter=ngram", "k=5", "k_schedule=[[1,1,5],[2,4,3]]", "quant=bf16", "sweep=k_advisor"]
    state = AdaptiveState(sweep="k_advisor", cells=sorted(first.cells), schedule_cells=[schedule])
    path = state_path(tmp_path / "results/k_advisor")
    path.parent.mkdir(parents=True)
    path.write_text(state.model_dump_json())
    plan = plan_sweep(overrides)
    assert sorted(plan.cells) == ["gemma3_270m-bf16-ngram-k5-sched1.1.5_2.4.3", *sorted(first.cells)]
    served = plan.cells["gemma3_270m-bf16-ngram-k5-sched1.1.5_2.4.3"]
    # Its job is run from these overrides (specsweep cell run), as every cell's.
    assert served.cell.config.k_schedule == [[1, 1, 5], [2, 4, 3]] and served.cell.config.k == 5
    assert "k_schedule=[[1,1,5],[2,4,3]]" in served.cell.overrides
