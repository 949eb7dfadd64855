"""Eval algebra and records without a server: top-k KLD, losslessness, vLLM's prompt logprobs, lm-eval's argv and
results, which cells lm-eval runs on."""

from __future__ import annotations

import json
import math
import random

import pytest

from specsweep.config.grid import expand
from specsweep.config.schema import LmEvalCfg, LosslessCfg
from specsweep.evals.distributions import (
    SAME_CHECKPOINT_MAX_KLD,
    Position,
    ScoredWindows,
    compare,
    position_kld,
    same_checkpoint_problem,
)
from specsweep.evals.endpoint import parse_prompt_logprobs
from specsweep.evals.lm_eval import lm_eval_argv, parse_results
from specsweep.evals.lossless import compare_greedy, describe
from specsweep.records.evals import GreedyOutput, GreedyRecord
from specsweep.workflow_plan import lm_eval_cells


def _position(probs: dict[int, float], target: int, k: int) -> Position:
    top = sorted(probs.items(), key=lambda item: -item[1])[:k]
    return Position(target=target, target_logprob=math.log(probs[target]), top=[(t, math.log(p)) for t, p in top])


def test_topk_kld_by_hand():
    # Reference {0: .5, 1: .3, 2: .2}, candidate {0: .4, 1: .4, 2: .2}, top-2 of each: shared {0, 1} (+ target 0),
    # rest bucket .2 vs .2: KL = .5 ln(.5/.4) + .3 ln(.3/.4) + .2 ln(.2/.2).
    reference = _position({0: 0.5, 1: 0.3, 2: 0.2}, target=0, k=2)
    candidate = _position({0: 0.4, 1: 0.4, 2: 0.2}, target=0, k=2)
    expected = 0.5 * math.log(0.5 / 0.4) + 0.3 * math.log(0.3 / 0.4)
    assert position_kld(reference, candidate) == pytest.approx(expected, abs=1e-12)


def test_topk_kld_is_a_lower_bound_of_the_full_kld():
    rng = random.Random(7)
    for _ in range(200):
        vocab = 50
        p = [rng.random() ** 3 for _ in range(vocab)]
        q = [max(x + rng.uniform(-0.1, 0.1), 1e-6) for x in p]
        p = {i: x / sum(p) for i, x in enumerate(p)}
        q = {i: x / sum(q) for i, x in enumerate(q)}
        full = sum(p[i] * math.log(p[i] / q[i]) for i in range(vocab))
        target = rng.randrange(vocab)
        coarse = position_kld(_position(p, target, 5), _position(q, target, 5))
        assert -1e-12 <= coarse <= full + 1e-12


def _scored(rows: list[list[dict[int, float]]], targets: list[list[int]], k: int = 3, sha: str = "w") -> ScoredWindows:
    windows = [[_position(probs, t, k) for probs, t in zip(window, window_targets)] for window, window_targets in zip(rows, targets)]
    return ScoredWindows(source="test", windows_sha256=sha, top_k=k, windows=windows)


def test_compare_identical_and_different():
    a = {0: 0.7, 1: 0.2, 2: 0.1}
    b = {0: 0.2, 1: 0.7, 2: 0.1}
    same = compare(_scored([[a, a]], [[0, 1]]), _scored([[a, a]], [[0, 1]]))
    assert same.kld_topk == 0 and same.top1_agreement == 1 and same.ppl_recovery_pct == 100
    assert same.ppl == pytest.approx(math.exp(-(math.log(0.7) + math.log(0.2)) / 2))
    other = compare(_scored([[a, a]], [[0, 1]]), _scored([[b, a]], [[0, 1]]))
    assert other.top1_agreement == 0.5 and other.kld_topk > 0.3
    assert other.ppl_recovery_pct == pytest.approx(100 * same.ppl / other.ppl)
    assert same_checkpoint_problem(same) is None
    assert "top-k KLD" in same_checkpoint_problem(other)
    with pytest.raises(ValueError, match="different windows"):
        compare(_scored([[a]], [[0]]), _scored([[a]], [[0]], sha="other"))


def test_same_checkpoint_tolerance_separates_noise_from_another_checkpoint():
    # The measured scales (distributions.py): float noise ~1e-8, the nearest other embedded checkpoint 0.15.
    assert 1e-8 < SAME_CHECKPOINT_MAX_KLD < 0.15 / 10


def test_parse_prompt_logprobs_keeps_the_topk_and_the_target():
    window = [2, 10, 11]
    response = [
        None,
        {"10": {"logprob": -0.1, "rank": 1, "decoded_token": "a"}, "12": {"logprob": -2.5, "rank": 2, "decoded_token": "b"}},
        {"13": {"logprob": -0.3, "rank": 1, "decoded_token": "c"}, "14": {"logprob": -1.9, "rank": 2, "decoded_token": "d"},
         "11": {"logprob": -6.0, "rank": 40, "decoded_token": "e"}},
    ]
    positions = parse_prompt_logprobs(window, response, top_k=2)
    assert positions[0] == Position(target=10, target_logprob=-0.1, top=[(10, -0.1), (12, -2.5)])
    assert positions[1] == Position(target=11, target_logprob=-6.0, top=[(13, -0.3), (14, -1.9)])
    with pytest.raises(ValueError, match="2 of 3 tokens"):
        parse_prompt_logprobs(window, response[:2], top_k=2)


def _greedy(outputs: dict[str, list[int]]) -> GreedyRecord:
    return GreedyRecord(prompts="p.jsonl", prompts_sha256="s", max_tokens=8, outputs=[
        GreedyOutput(id=key, token_ids=ids, pieces=[f"<{i}>" for i in ids], finish_reason="length")
        for key, ids in outputs.items()
    ])  # fmt: skip


def test_lossless_identical_outputs_match_fully():
    reference = _greedy({"a": [1, 2, 3, 4], "b": [5, 6]})
    result = compare_greedy(reference, _greedy({"a": [1, 2, 3, 4], "b": [5, 6]}))
    assert result.match_pct == 100 and result.first_divergence is None
    assert describe(result).startswith("identical (6 tokens, 2 prompts")


def test_lossless_comparison_fails_on_different_outputs():
    reference = _greedy({"a": [1, 2, 3, 4], "b": [5, 6, 7]})
    candidate = _greedy({"a": [1, 2, 9, 9], "b": [5, 6]})
    result = compare_greedy(reference, candidate)
    # a: 2 of 4 match; b: 2 of max(3, 2) match.
    assert result.match_pct == pytest.approx(100 * 4 / 7)
    assert result.divergent_prompts == 2
    first = result.first_divergence
    assert (first.prompt_id, first.position, first.reference_text, first.candidate_text) == ("a", 2, "<3><4>", "<9><9>")
    assert "a at token 2" in describe(result)


def test_zero_compared_tokens_is_an_error_not_100_percent():
    from specsweep.evals.lossless import NothingCompared

    with pytest.raises(NothingCompared, match="no greedy tokens to compare"):
        compare_greedy(_greedy({"a": [], "b": []}), _greedy({"a": [], "b": []}))
    # One side empty is a full divergence, not nothing.
    assert compare_greedy(_greedy({"a": [1, 2]}), _greedy({"a": []})).match_pct == 0


def test_lossless_refuses_records_of_different_prompt_sets():
    other = _greedy({"a": [1]}).model_copy(update={"max_tokens": 9})
    with pytest.raises(ValueError, match="different prompt sets"):
        compare_greedy(_greedy({"a": [1]}), other)


def test_lm_eval_argv():
    cfg = LmEvalCfg(tasks=["specsweep_facts", "x"], include_path="data/eval/lm_eval", num_fewshot=0, limit=40, timeout_s=600)
    argv = lm_eval_argv("/env/bin/python", cfg, "http://127.0.0.1:8123", "gemma-3-270m", "/models/m", 2048, "/out")
    assert argv[:5] == ["/env/bin/python", "-m", "lm_eval", "run", "--model"]
    args = dict(zip(argv[4::2], argv[5::2]))
    assert args["--model"] == "local-completions" and args["--tasks"] == "specsweep_facts,x"
    model_args = dict(item.split("=", 1) for item in args["--model_args"].split(","))
    assert model_args["base_url"] == "http://127.0.0.1:8123/v1/completions"
    assert model_args["tokenizer"] == "/models/m" and model_args["add_bos_token"] == "True"
    assert model_args["max_length"] == "2048" and args["--limit"] == "40" and args["--num_fewshot"] == "0"
    assert args["--include_path"].endswith("data/eval/lm_eval")
    chat = lm_eval_argv("p", cfg.model_copy(update={"model": "local-chat-completions"}), "http://h:1", "m", "/t", None, "/o")
    assert "/v1/chat/completions" in chat[chat.index("--model_args") + 1] and chat[-1] == "--apply_chat_template"


def test_lm_eval_results_parsed():
    results = json.loads((__import__("pathlib").Path(__file__).parent / "data/lm_eval/results.json").read_text())
    scores = parse_results(results)
    assert [(s.task, s.metric) for s in scores] == [("specsweep_facts", "acc,none"), ("specsweep_facts", "acc_norm,none")]
    assert scores[0].value == pytest.approx(0.8421, abs=1e-4) and scores[0].stderr == pytest.approx(0.0376, abs=1e-4)
    assert scores[0].n_samples == 95


def test_lm_eval_cells_default_is_each_quant_baseline_plus_one_drafter_cell():
    cells = expand([])
    picked = lm_eval_cells(cells)
    baselines = {c.id for c in cells if c.config.drafter.kind == "none"}
    assert baselines <= picked and len(picked - baselines) == 1
    assert picked - baselines == {"gemma3_270m-bf16-ngram-k2"}
    assert lm_eval_cells(expand(["eval.lm_eval.cells=baselines"])) == baselines
    assert lm_eval_cells(expand(["eval.lm_eval.cells=all"])) == {c.id for c in cells}
    assert lm_eval_cells(expand(["eval.lm_eval=null"])) == set()


def test_lossless_cfg_default_prompts_ship():
    from specsweep.evals.lossless import load_prompts

    assert [p.id for p in load_prompts(LosslessCfg().prompts)] == ["story", "code", "list", "repeat"]


def test_a_quality_group_without_in_process_figures_records_why_and_loads_nothing(tmp_path) -> None:
    """The Spark sweep's 31B quants (quality=endpoint_only): no in-process job, a not_measured record naming the
    served path (the model dirs here do not exist: nothing may read them)."""
    from specsweep.config.compose import compose_cell
    from specsweep.evals.quality import evaluate
    from specsweep.records.model import ModelRecord
    from specsweep.records.quant import QuantRecord

    quality = compose_cell(["quality=endpoint_only"]).quality
    assert quality.in_process is False and quality.text == compose_cell([]).quality.text
    base = ModelRecord(name="gemma4_31b_it", location=str(tmp_path / "absent-base"))
    quant = QuantRecord(model="gemma4_31b_it", quant="nvfp4a16_gptq", kind="llmcompressor", scheme="NVFP4A16",
                        location=str(tmp_path / "absent-quant"))  # fmt: skip
    record = evaluate(quant, base, quality)
    assert record.status == "not_measured" and "eval.endpoint_quality" in record.reason and record.ppl is None


def test_the_spark_eval_is_a_documented_subset_with_a_timeout_from_its_token_budget() -> None:
    from specsweep.config.compose import compose_cell

    cfg = compose_cell(["sweep=spark"]).cell.eval.lm_eval
    assert (cfg.tasks, cfg.limit, cfg.num_concurrent, cfg.max_gen_toks, cfg.timeout_s) == (["gsm8k"], 250, 4, 256, None)
    # 60 s of prefill allowance + 256 tokens at 2 t/s per request; 250 questions 4 at a time = 63 rounds.
    assert cfg.request_timeout_s() == 188
    assert cfg.run_timeout_s() == 63 * 188
    argv = lm_eval_argv("p", cfg, "http://h:1", "m", "/t", None, "/o")
    assert argv[argv.index("--limit") + 1] == "250"
    assert argv[argv.index("--gen_kwargs") + 1] == "max_gen_toks=256"
    model_args = dict(kv.split("=", 1) for kv in argv[argv.index("--model_args") + 1].split(","))
    assert model_args["num_concurrent"] == "4" and model_args["timeout"] == "188"


def test_an_explicit_timeout_is_the_whole_runs_and_a_missing_budget_is_refused() -> None:
    from pydantic import ValidationError

    explicit = LmEvalCfg(tasks=["a", "b"], timeout_s=900)
    assert explicit.run_timeout_s() == explicit.request_timeout_s() == 900
    # Two tasks of 10 questions, 3 at a time: 7 rounds of (60 + 100 / 4) s.
    budget = LmEvalCfg(tasks=["a", "b"], limit=10, num_concurrent=3, max_gen_toks=100, min_decode_tps=4)
    assert budget.run_timeout_s() == 7 * 85
    for missing in ({"limit": 10}, {"max_gen_toks": 100}):
        with pytest.raises(ValidationError, match="derived from the token budget, which needs eval.lm_eval.limit"):
            LmEvalCfg(tasks=["a"], **missing)
