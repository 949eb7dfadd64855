"""`specsweep reproduce`'s check of a record against this machine: one line per changed fact."""

from __future__ import annotations

from specsweep.reproduce import differences


def test_differences_name_each_fact_that_changed() -> None:
    recorded = {"git_sha": "a", "hardware": {"cpu": "Xeon", "cpu_count": 2}, "vllm_prs": [1], "started_at": "t0"}
    now = {"git_sha": "a", "hardware": {"cpu": "EPYC", "cpu_count": 2}, "vllm_prs": [1, 2], "started_at": "t1"}
    assert differences(recorded, now) == ["image: vllm_prs recorded [1], now [1, 2]",
                                          "hardware: hardware.cpu recorded 'Xeon', now 'EPYC'"]  # fmt: skip


def test_gpu_facts_from_nvidia_smi_csv() -> None:
    from specsweep.records.manifest import parse_gpus

    # `nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits`: an H200, and a GB10
    # whose memory is the host's (unified), reported as [N/A].
    assert parse_gpus("NVIDIA H200, 570.124.06, 143771\nNVIDIA GB10, 580.95.05, [N/A]\n") == [
        {"name": "NVIDIA H200", "driver": "570.124.06", "memory_total_mib": 143771.0},
        {"name": "NVIDIA GB10", "driver": "580.95.05", "memory_total_mib": None},
    ]
