"""`specsweep reproduce` on a cell of the shared embedded sweep: the record checked against this machine (one
warning per changed fact), and the cell rerun with identical greedy tokens and no change beyond the noise."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project import project_env

from specsweep.report.wandb_runs import run_id

pytestmark = pytest.mark.slow

# Not the lm-eval cross-check cell (bf16 ngram k=2): its rerun would run lm-eval again.
CELL = "gemma3_270m-bf16-ngram-k4"


def _copy(swept: Path, tmp_path: Path) -> Path:
    target = tmp_path / "results/embedded" / CELL
    target.mkdir(parents=True)
    for name in ("bench.json", "manifest.json", "config.yaml"):
        shutil.copy2(swept / "results/embedded" / CELL / name, target / name)
    return target


def _reproduce(swept: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specsweep.cli", "reproduce", *args, "--results", str(tmp_path / "results")],
                          cwd=swept, env=project_env(swept), capture_output=True, text=True, timeout=1200)  # fmt: skip


def test_a_changed_manifest_field_is_the_one_warning(swept: Path, tmp_path: Path) -> None:
    cell_dir = _copy(swept, tmp_path)
    unchanged = _reproduce(swept, tmp_path, CELL, "--check-only")
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert "WARNING" not in unchanged.stderr and "nothing: same code, config, image, weights and hardware" in unchanged.stdout
    manifest = json.loads((cell_dir / "manifest.json").read_text())
    manifest["vllm_version"] = "0.31.0"
    manifest["quant_files_sha256"] = {**manifest["quant_files_sha256"], "model.safetensors": "0" * 64}
    (cell_dir / "manifest.json").write_text(json.dumps(manifest))
    # Found by its W&B run id too.
    changed = _reproduce(swept, tmp_path, run_id("embedded", CELL), "--check-only")
    assert changed.returncode == 0, changed.stderr[-3000:]
    warnings = [line for line in changed.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, warnings
    assert "image: vllm_version recorded '0.31.0', now '0.32.0'" in warnings[0]
    assert "weights: quant_files_sha256.model.safetensors recorded '000" in warnings[1]


def test_the_rerun_has_the_same_greedy_tokens_and_no_change_beyond_the_noise(swept: Path, tmp_path: Path) -> None:
    _copy(swept, tmp_path)
    result = _reproduce(swept, tmp_path, str(tmp_path / "results/embedded" / CELL))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "code_edit c1: 1 of 1 requests' greedy tokens identical" in out
    assert "lossless prompts: 4 of 4 greedy outputs identical" in out
    # "10 of 12 changes ..." must not pass: the count itself is 0.
    assert re.search(r"(?<!\d)0 of \d+ changes exceed the run-to-run noise", out), out[-2000:]
    rerun = json.loads((tmp_path / "results/_reproduce/embedded" / CELL / "bench.json").read_text())
    assert rerun["status"] == "ok" and rerun["memory"]["peak_rss_bytes"] > 0
