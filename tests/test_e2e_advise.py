"""The k-advisor on the shared embedded sweep: predictions for every k from the measured ngram cells, and dynamic
policies replayed on the traces vLLM returned (--per-request-spec-decode-metrics detailed)."""

from __future__ import annotations

import json
import math
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
    assert set(measured) == {2, 4}
    # What the advisor promises, and no more: replaying the k_max cell's own traces reproduces its step mix, so the
    # prediction there misses the measurement by exactly the cost fit's residual at that cell (tg = 1 / seconds
    # per token), and no cell's residual exceeds sqrt(n) times the fit's RMS over n cells. How close the fit itself
    # comes is not asserted: one bench run of a few dozen tokens on a shared 2-core host gave fit RMS errors from
    # 0.5 to 34 % across CI runs here; the accuracy figures come from benchmarks/k_advisor.py (3 runs, every k).
    for g in advice["groups"]:
        fitted = {p["k"]: p["fitted_ms_per_token"] / p["measured_ms_per_token"] for p in g["cost_points"]}
        top = next(p for p in g["predictions"] if p["k"] == g["k_max"])
        assert top["predicted_tg_req_tps"] / top["measured_tg_req_tps"] == pytest.approx(1 / fitted[g["k_max"]],
                                                                                          rel=1e-6)
        bound = math.sqrt(len(fitted)) * g["cost_fit_rms_error_pct"] / 100
        assert all(abs(r - 1) <= bound + 1e-9 for r in fitted.values())
    # Every drafter cell carried per-step traces; the replays are consistent with their definitions.
    for g in advice["groups"]:
        assert g["trace_steps"] > 0 and abs(sum(g["accepted_length_distribution"]) - 1) < 1e-9
        assert g["oracle_tg_req_tps"] >= g["hf_heuristic_tg_req_tps"] > 0
        assert 1 <= g["hf_heuristic_mean_k"] <= g["k_max"]
    assert {r["speculative_config"]["method"] for r in advice["recommendations"]} == {"ngram"}
    assert (swept / "results/embedded/advice.md").read_text().startswith("# specsweep advise: embedded")
