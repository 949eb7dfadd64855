"""`specsweep reproduce`'s check of a record against this machine: one line per changed fact."""

from __future__ import annotations

from specsweep.reproduce import differences


def test_differences_name_each_fact_that_changed() -> None:
    recorded = {"git_sha": "a", "hardware": {"cpu": "Xeon", "cpu_count": 2}, "vllm_prs": [1], "started_at": "t0"}
    now = {"git_sha": "a", "hardware": {"cpu": "EPYC", "cpu_count": 2}, "vllm_prs": [1, 2], "started_at": "t1"}
    assert differences(recorded, now) == ["image: vllm_prs recorded [1], now [1, 2]",
                                          "hardware: hardware.cpu recorded 'Xeon', now 'EPYC'"]  # fmt: skip
