"""Quant recipes: validation before any heavy work, platform support, and what a cell serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from project import server_command

from specsweep.config.compose import compose_cell
from specsweep.images.base import unsupported_reason
from specsweep.quantize.run import check_recipe, linear_input_widths
from specsweep.records.image import ImageRecord
from specsweep.records.model import ModelRecord

# Gemma-3-270M's text config (hidden 640, 4 heads of 256, MLP 2048): the layer widths group sizes must divide.
GEMMA3_270M = {"hidden_size": 640, "num_attention_heads": 4, "head_dim": 256, "intermediate_size": 2048}


def base(tmp_path: Path) -> ModelRecord:
    (tmp_path / "config.json").write_text(json.dumps(GEMMA3_270M))
    return ModelRecord(name="gemma3_270m", location=str(tmp_path))


def test_linear_input_widths() -> None:
    assert linear_input_widths(GEMMA3_270M) == {"q/k/v/gate/up_proj": 640, "o_proj": 1024, "down_proj": 2048}
    assert linear_input_widths({"text_config": GEMMA3_270M})["o_proj"] == 1024


def test_group_size_must_divide_every_layer(tmp_path: Path) -> None:
    cell = compose_cell(["quant=w4a16_gptq", "quant.group_size=96"]).cell
    with pytest.raises(ValueError, match=r"group_size 96 does not divide .*640.*use one of \[16, 32, 64, 128\]"):
        check_recipe(cell.quant, cell.model, base(tmp_path))
    ok = compose_cell(["quant=w4a16_gptq"]).cell
    check_recipe(ok.quant, ok.model, base(tmp_path))


def test_hub_calibration_is_refused_on_the_packaged_model(tmp_path: Path) -> None:
    cell = compose_cell(["quant=w4a16_gptq", "~quant.calibration", "+quant.calibration.kind=hub_dataset",
                         "+quant.calibration.dataset=d", "+quant.calibration.split=train",
                         "+quant.calibration.revision=r", "+quant.calibration.num_samples=8",
                         "+quant.calibration.seq_len=256"]).cell  # fmt: skip
    with pytest.raises(ValueError, match="never downloads data"):
        check_recipe(cell.quant, cell.model, base(tmp_path))


def image_record(cell) -> ImageRecord:
    return ImageRecord(
        name=cell.image.name, kind="venv", location="/envs/v", vllm_version="0.32.0", key="k", packages=[],
        build_seconds=0, built_at="", offline=True,
    )  # fmt: skip


@pytest.mark.parametrize("quant,skipped", [("bf16", False), ("w4a16_gptq", False), ("int4_autoround", False),
                                           ("nvfp4a16_gptq", True), ("fp8_dynamic", True)])  # fmt: skip
def test_cpu_image_serves_w4a16_and_skips_nvfp4_and_fp8(quant: str, skipped: bool) -> None:
    cell = compose_cell([f"quant={quant}"]).cell
    reason = unsupported_reason(cell, image_record(cell))
    assert (reason is not None) == skipped
    if quant == "nvfp4a16_gptq":
        assert "no CPU kernel for NVFP4" in reason


def test_hub_quant_serves_its_repo_at_the_pinned_revision() -> None:
    cell = compose_cell(["sweep=spark", "quant=ebircak_nvfp4a16_gptq"]).cell
    argv = server_command(cell, cell.quant.repo_id, 8000, container_name="c").argv
    assert argv[argv.index("serve") + 1] == "ebircak/gemma-4-31B-it-4bit-NVFP4A16-GPTQ"
    assert argv[argv.index("--revision") + 1] == cell.quant.revision
