"""Sweep expansion follows Hydra's multirun semantics; cell ids are stable and unique."""

from __future__ import annotations

import pytest

from specsweep.config.compose import ConfigError
from specsweep.config.grid import expand


def ids(cells) -> list[str]:
    return [c.id for c in cells]


def test_embedded_sweep_has_none_once_and_ngram_per_k() -> None:
    assert ids(expand([])) == [
        "gemma3_270m-bf16-ngram-k2",
        "gemma3_270m-bf16-ngram-k4",
        "gemma3_270m-bf16-none",
        "gemma3_270m-int4_autoround_fast-ngram-k4",
        "gemma3_270m-int4_autoround_fast-none",
        "gemma3_270m-nvfp4a16-ngram-k4",
        "gemma3_270m-nvfp4a16-none",
        "gemma3_270m-w4a16_gptq-ngram-k4",
        "gemma3_270m-w4a16_gptq-none",
    ]


def test_a_list_of_grids_sweeps_their_union_once() -> None:
    # Both grids of the embedded sweep contain bf16-ngram-k4 once `quant=bf16` narrows the second one.
    assert ids(expand(["quant=bf16"])) == [
        "gemma3_270m-bf16-ngram-k2",
        "gemma3_270m-bf16-ngram-k4",
        "gemma3_270m-bf16-none",
    ]
    assert ids(expand(["drafter=none"])) == [
        "gemma3_270m-bf16-none",
        "gemma3_270m-int4_autoround_fast-none",
        "gemma3_270m-nvfp4a16-none",
        "gemma3_270m-w4a16_gptq-none",
    ]


def test_user_override_replaces_an_axis() -> None:
    assert ids(expand(["quant=bf16", "drafter=ngram", "k=3"])) == ["gemma3_270m-bf16-ngram-k3"]
    assert ids(expand(["quant=bf16", "drafter=ngram", "k=1,3,7"])) == [
        "gemma3_270m-bf16-ngram-k1",
        "gemma3_270m-bf16-ngram-k3",
        "gemma3_270m-bf16-ngram-k7",
    ]


def test_hydra_range_and_choice_syntax() -> None:
    assert len(expand(["quant=bf16", "drafter=ngram", "k=range(1,8)"])) == 7
    assert ids(expand(["quant=bf16", "drafter=choice(none)"])) == ["gemma3_270m-bf16-none"]


def test_other_overrides_apply_to_every_cell_and_are_handed_to_jobs() -> None:
    cells = expand(["serve.max_num_seqs=2"])
    assert all(c.config.serve.max_num_seqs == 2 for c in cells)
    assert all("serve.max_num_seqs=2" in c.overrides for c in cells)


def test_cells_differing_outside_the_id_axes_get_distinct_ids() -> None:
    cells = expand(["quant=bf16", "drafter=ngram", "k=2", "serve.max_num_seqs=1,4"])
    assert len(cells) == 2 and len(set(ids(cells))) == 2
    assert all(c.id.startswith("gemma3_270m-bf16-ngram-k2-") for c in cells)


def test_spark_sweep() -> None:
    cells = expand([], "spark")
    # The unquantized base without a drafter is every quant's quality reference (endpoint PPL/KLD, lm-eval).
    assert ids(cells) == ["gemma4_31b_it-bf16-none"] + [
        f"gemma4_31b_it-{quant}-{drafter}"
        for quant in ("ebircak_nvfp4a16_gptq", "int4_autoround", "intel_int4_autoround", "nvfp4a16_gptq")
        for drafter in ("dflash-k15", *(f"gemma_mtp-k{k}" for k in (1, 2, 3, 5, 7)), "none")
    ]
    # Intel's AutoRound checkpoint is served with the users' first command line; the others with their second.
    assert {c.config.serve.name for c in cells if c.config.quant.name == "intel_int4_autoround"} == {"spark_autoround"}
    assert {c.config.serve.name for c in cells if c.config.quant.name != "intel_int4_autoround"} == {"spark"}


@pytest.mark.parametrize("bad", [["drafter=ngram,gemma_mpt"], ["k=0,2"], ["k=1,,2"]])
def test_a_bad_value_anywhere_in_a_sweep_fails_the_whole_expansion(bad: list[str]) -> None:
    with pytest.raises(ConfigError):
        expand(bad)
