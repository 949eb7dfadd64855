"""The k-advisor on the shared embedded sweep: predictions for every k from the measured ngram cells, and dynamic
policies replayed on the traces vLLM returned (--per-request-spec-decode-metrics detailed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_advice_for_every_ngram_group(swept: Path) -> None:
    advice = json.loads((swept / "results/embedded/advice.json").read_text())
    groups = {(g["quant"], g["workload"], g["concurrency"]): g for g in advice["groups"]}
    # bf16 ran ngram at k=2 and 4 plus no drafter: the step cost is fitted on the three cells (two drafted k: no
    # fixed cost per drafted step), each drafted cell's plain steps counted from its traces, and k < 4 are the
    # k = 4 cell's traces replayed.
    group = groups[("bf16", "code_edit", 1)]
    assert group["k_max"] == 4 and [p["k"] for p in group["predictions"]] == [1, 2, 3, 4]
    points = {p["k"]: p for p in group["cost_points"]}
    assert sorted(points) == [0, 2, 4] and points[0]["plain_steps_per_token"] == 1
    assert all(0 < points[k]["drafted_steps_per_token"] < 1 for k in (2, 4))
    assert group["plain_step_ms"] > 0 and group["cost_per_token_ms"] > 0 and not group["draft_step_fixed_fitted"]
    assert 0 <= group["plain_step_share"] < 1 and group["acceptance_model"] == "trace replay"
    measured = {p["k"]: p for p in group["predictions"] if p["measured_tg_req_tps"] is not None}
    assert set(measured) == {2, 4} and all(abs(p["error_pct"]) < 50 for p in measured.values())
    # Every drafter cell carried per-step traces; the replays are consistent with their definitions.
    for g in advice["groups"]:
        assert g["trace_steps"] > 0 and abs(sum(g["accepted_length_distribution"]) - 1) < 1e-9
        assert g["oracle_tg_req_tps"] >= g["hf_heuristic_tg_req_tps"] > 0
        assert 1 <= g["hf_heuristic_mean_k"] <= g["k_max"]
    assert {r["speculative_config"]["method"] for r in advice["recommendations"]} == {"ngram"}
    assert (swept / "results/embedded/advice.md").read_text().startswith("# specsweep advise: embedded")
