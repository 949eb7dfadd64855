"""Memory per cell: vLLM's own log lines parsed, weight files summed, the peak memory of marked processes sampled
from a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from specsweep.serve.memory import PeakMemory, from_server_log, weights_on_disk

# Lines as vLLM 0.32 writes them: the CPU ones from a served embedded cell, the GPU ones in the formats of
# v1/worker/gpu_model_runner.py and v1/worker/gpu_worker.py.
CPU_LOG = """\
(EngineCore pid=11145) INFO 11-30 03:22:51 [weight_utils.py:1108] Filesystem type for checkpoints: EXT4. Checkpoint size: 1.00 GiB. Available RAM: 20.71 GiB.
(EngineCore pid=11145) INFO 11-30 03:22:53 [cpu_worker.py:260] Explicitly set (1.0/23.54) GiB for KV cache on node 0.
(EngineCore pid=11145) INFO 11-30 03:22:53 [kv_cache_utils.py:2327] CPU KV cache size: 27,678 tokens, Maximum concurrency for 2,048 tokens per request: 13.51x
"""
GPU_LOG = """\
(EngineCore pid=77) INFO 11-30 10:00:01 [gpu_model_runner.py:5150] Model loading took 58.12 GiB memory and 41.200000 seconds
(EngineCore pid=77) INFO 11-30 10:00:30 [gpu_worker.py:760] Available KV cache memory: 31.5 GiB
(EngineCore pid=77) INFO 11-30 10:00:30 [kv_cache_utils.py:2327] GPU KV cache size: 137,616 tokens, Maximum concurrency for 32,768 tokens per request: 4.20x
"""


def test_memory_figures_from_vllms_log_lines():
    assert from_server_log(CPU_LOG) == {"checkpoint_gib": 1.0, "kv_cache_gib": 1.0, "kv_cache_tokens": 27678,
                                        "max_model_len": 2048, "kv_cache_max_concurrency": 13.51}  # fmt: skip
    assert from_server_log(GPU_LOG) == {"model_memory_gib": 58.12, "kv_cache_gib": 31.5, "kv_cache_tokens": 137616,
                                        "max_model_len": 32768, "kv_cache_max_concurrency": 4.2}  # fmt: skip
    assert from_server_log("vLLM never got that far\n") == {}


def test_weights_on_disk_counts_weight_files_only(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "part.gguf").write_bytes(b"x" * 24)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 5000)
    assert weights_on_disk(tmp_path) == 1024
    assert weights_on_disk(tmp_path / "model.safetensors") == 1000
    assert weights_on_disk(tmp_path / "missing") is None and weights_on_disk(None) is None


def test_peak_memory_of_the_marked_processes(tmp_path: Path):
    """A marked process that holds 300 MiB for a while, a child of it that holds 100 MiB, and an unmarked one that
    holds 500 MiB: the peak counts the marked two."""
    hold = "import sys, time; block = bytearray(int(sys.argv[1]) * 2**20); time.sleep(float(sys.argv[2]))"
    marker = {"SPECSWEEP_TEST_MARKER": str(tmp_path)}
    env = {**os.environ, **marker}
    parent = ("import subprocess, sys, time; block = bytearray(300 * 2**20); "
              f"child = subprocess.Popen([sys.executable, '-c', {hold!r}, '100', '3']); time.sleep(3); child.wait()")
    with PeakMemory("SPECSWEEP_TEST_MARKER", str(tmp_path), interval_s=0.1) as peak:
        others = subprocess.Popen([sys.executable, "-c", hold, "500", "3"])
        marked = subprocess.Popen([sys.executable, "-c", parent], env=env)
        time.sleep(2.5)
        # Read once while both marked processes still hold their memory.
        peak.final_pss()
        marked.wait()
        others.wait()
    assert peak.samples > 5 and peak.processes == 2
    mib = 2**20
    assert 400 * mib <= peak.peak_rss < 480 * mib
    assert 400 * mib <= peak.final_pss_bytes <= peak.peak_rss
