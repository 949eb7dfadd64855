"""The quant axis for real: llmcompressor in its own env, checkpoints with true hashes, quality vs the base.

Checkpoints and quality figures are cached by content (the e2e sweep builds the same ones), so these reuse
what the sweep made and only build what it does not (the RTN baseline).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from project import job_config

from specsweep.cache_check import sha256_file
from specsweep.records.quant import QuantManifest

pytestmark = pytest.mark.slow


def specsweep(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "specsweep.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def receipts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("quant")
    result = specsweep("job", "model", "--receipt", str(where / "model.json"), "--job-config", job_config(where, "model"))
    assert result.returncode == 0, result.stderr[-3000:]
    return where


def quantized(where: Path, quant: str, *overrides: str) -> dict:
    receipt = where / f"{quant}.json"
    if not receipt.exists():
        result = specsweep(
            "job", "quantize", "--receipt", str(receipt), "--model-receipt", str(where / "model.json"),
            "--job-config", job_config(where, "quant", f"quant={quant}", *overrides),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(receipt.read_text())


def quality(where: Path, quant: str) -> dict:
    out = where / f"{quant}.quality.json"
    if not out.exists():
        quantized(where, quant)
        result = specsweep(
            "job", "quality", "--out", str(out), "--model-receipt", str(where / "model.json"),
            "--quant-receipt", str(where / f"{quant}.json"), "--job-config", job_config(where, "quality", f"quant={quant}"),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_checkpoint_files_match_their_manifest(receipts: Path) -> None:
    record = quantized(receipts, "w4a16_gptq")
    location = Path(record["location"])
    # The checkpoint's manifest and the receipt's, read through the same record model.
    manifest = json.loads((location / "quant_manifest.json").read_text())
    assert QuantManifest.model_validate(manifest) == QuantManifest.model_validate(record["manifest"])
    assert manifest["files_sha256"] == record["manifest"]["files_sha256"]
    weights = [name for name in manifest["files_sha256"] if name.endswith(".safetensors")]
    assert weights, manifest["files_sha256"]
    for name, digest in manifest["files_sha256"].items():
        assert sha256_file(location / name) == digest, name
    # A compressed-tensors checkpoint vLLM recognises, with lm_head left unquantized.
    config = json.loads((location / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    assert "lm_head" in config["ignore"]
    assert config["config_groups"]["group_0"]["weights"]["group_size"] == 128
    calibration = manifest["calibration"]
    assert calibration["path"] == "data/calibration/lcet10_calibration.txt"
    assert calibration["num_samples"] == 32 and calibration["seq_len"] == 256
    assert calibration["sha256"] and manifest["versions"]["llmcompressor"] == "0.14.0.1"
    assert manifest["wall_s"] > 0 and manifest["peak_rss_mb"] > 0


def test_gptq_beats_round_to_nearest_with_the_same_scheme(receipts: Path) -> None:
    gptq, rtn = quality(receipts, "w4a16_gptq"), quality(receipts, "w4a16_rtn")
    assert gptq["status"] == rtn["status"] == "ok"
    assert gptq["ppl_base"] == pytest.approx(rtn["ppl_base"])
    # Calibration is real: GPTQ's error-compensated rounding predicts the held-out text better than RTN.
    assert gptq["ppl"] < rtn["ppl"], (gptq["ppl"], rtn["ppl"])
    assert gptq["kld"] < rtn["kld"]
    assert 0 < rtn["ppl_recovery_pct"] < gptq["ppl_recovery_pct"] <= 100.5


def test_the_unquantized_base_has_zero_kld(receipts: Path) -> None:
    base = quality(receipts, "bf16")
    assert base["status"] == "ok"
    assert base["kld"] == 0 and base["ppl"] == base["ppl_base"]
    assert base["ppl_recovery_pct"] == 100 and base["top1_agreement"] == 1


def test_a_group_size_that_does_not_divide_fails_at_job_start(receipts: Path) -> None:
    result = specsweep(
        "job", "quantize", "--receipt", str(receipts / "bad.json"), "--model-receipt", str(receipts / "model.json"),
        "--job-config", job_config(receipts, "quant", "quant=w4a16_gptq", "quant.group_size=96"), timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "group_size 96 does not divide" in result.stderr
    assert "use one of" in result.stderr
    # It failed before quantizing anything.
    assert "[quantize] gemma3_270m / w4a16_gptq" not in result.stderr
    assert not (receipts / "bad.json").exists()
