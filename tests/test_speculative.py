"""Every drafter renders to the exact --speculative-config JSON vLLM expects."""

from __future__ import annotations

import json

import pytest

from specsweep.config.compose import compose_cell
from specsweep.serve.speculative import RENDERERS, speculative_config_json


def render(drafter: str, k: int) -> str | None:
    model = "gemma4_31b_it" if drafter in ("gemma_mtp", "dflash", "eagle3", "draft_model") else "gemma3_270m"
    cell = compose_cell([f"model={model}", f"drafter={drafter}", f"k={k}"]).cell
    return speculative_config_json(cell.drafter, cell.k)


def test_gemma_mtp_is_byte_exact() -> None:
    assert render("gemma_mtp", 7) == (
        '{"method":"mtp","model":"google/gemma-4-31B-it-assistant","num_speculative_tokens":7}'
    )


def test_none_renders_no_flag() -> None:
    assert render("none", 4) is None


def test_ngram() -> None:
    assert json.loads(render("ngram", 3)) == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
    }


def test_dflash() -> None:
    rendered = render("dflash", 15)
    assert rendered.startswith('{"method":"dflash","model":"z-lab/gemma-4-31B-it-DFlash","num_speculative_tokens":15')
    assert json.loads(rendered)["attention_backend"] == "flash_attn"


def test_eagle3() -> None:
    assert json.loads(render("eagle3", 3)) == {
        "method": "eagle3",
        "model": "RedHatAI/gemma-4-31B-it-speculator.eagle3",
        "num_speculative_tokens": 3,
    }


def test_draft_model() -> None:
    assert json.loads(render("draft_model", 5)) == {
        "method": "draft_model",
        "model": "google/gemma-4-E2B-it",
        "num_speculative_tokens": 5,
    }


def test_suffix() -> None:
    config = json.loads(render("suffix", 8))
    assert config["method"] == "suffix" and config["num_speculative_tokens"] == 8
    assert config["suffix_decoding_max_tree_depth"] == 24


def test_k_overrides_flow_into_the_json() -> None:
    assert json.loads(render("gemma_mtp", 1))["num_speculative_tokens"] == 1


def test_ngram_min_above_max_is_an_error() -> None:
    cell = compose_cell(["drafter=ngram", "drafter.prompt_lookup_min=5"]).cell
    with pytest.raises(ValueError, match="make min <= max"):
        speculative_config_json(cell.drafter, cell.k)


def test_every_drafter_kind_has_a_renderer() -> None:
    assert set(RENDERERS) == {"none", "ngram", "mtp", "dflash", "eagle3", "draft_model", "suffix"}
