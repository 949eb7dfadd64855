"""Render each drafter kind to the exact `--speculative-config` JSON vLLM expects."""

from __future__ import annotations

import json
from typing import Any, Callable

from specsweep.config.schema import (
    CellCfg,
    DrafterCfg,
    ModelDrafter,
    NgramDrafter,
    NoDrafter,
    SuffixDrafter,
)

Renderer = Callable[[Any, int], "dict[str, Any] | None"]
RENDERERS: dict[str, Renderer] = {}


def renderer(*kinds: str) -> Callable[[Renderer], Renderer]:
    def register(function: Renderer) -> Renderer:
        for kind in kinds:
            RENDERERS[kind] = function
        return function

    return register


@renderer("none")
def _none(_: NoDrafter, __: int) -> None:
    return None


@renderer("ngram")
def _ngram(drafter: NgramDrafter, k: int) -> dict[str, Any]:
    if drafter.prompt_lookup_min > drafter.prompt_lookup_max:
        raise ValueError(
            f"drafter {drafter.name}: prompt_lookup_min {drafter.prompt_lookup_min} > "
            f"prompt_lookup_max {drafter.prompt_lookup_max}; make min <= max"
        )
    return {
        "method": "ngram",
        "num_speculative_tokens": k,
        "prompt_lookup_max": drafter.prompt_lookup_max,
        "prompt_lookup_min": drafter.prompt_lookup_min,
    }


@renderer("mtp", "dflash", "eagle3", "draft_model")
def _model(drafter: ModelDrafter, k: int, location: str | None = None) -> dict[str, Any]:
    """`location`: the drafter's local snapshot (prepared and pinned to a commit), served instead of the hub id."""
    config: dict[str, Any] = {"method": drafter.kind, "model": location or drafter.model, "num_speculative_tokens": k}
    if drafter.revision and location is None:
        config["revision"] = drafter.revision
    config.update(drafter.speculative_extra)
    return config


@renderer("suffix")
def _suffix(drafter: SuffixDrafter, k: int) -> dict[str, Any]:
    return {
        "method": "suffix",
        "num_speculative_tokens": k,
        "suffix_decoding_max_tree_depth": drafter.suffix_decoding_max_tree_depth,
        "suffix_decoding_max_spec_factor": drafter.suffix_decoding_max_spec_factor,
        "suffix_decoding_min_token_prob": drafter.suffix_decoding_min_token_prob,
    }


def speculative_config(drafter: DrafterCfg, k: int, drafter_location: str | None = None) -> dict[str, Any] | None:
    if drafter_location is not None:
        return _model(drafter, k, drafter_location)
    return RENDERERS[drafter.kind](drafter, k)


def speculative_config_json(
    drafter: DrafterCfg, k: int, drafter_location: str | None = None, schedule: list[list[int]] | None = None,
    adaptive: bool = False,
) -> str | None:
    """Compact JSON, key order as written above (vLLM parses it with json.loads). `schedule`: vLLM's dynamic
    speculative decoding, [[lo, hi, k], ...] by batch size (`k_schedule`); `k` is then the largest k it may use.
    `adaptive`: vLLM's adaptive verification of the drafted tokens."""
    config = speculative_config(drafter, k, drafter_location)
    if config is not None and schedule:
        config["num_speculative_tokens_per_batch_size"] = [list(entry) for entry in schedule]
    if config is not None and adaptive:
        config["enable_adaptive_verification"] = True
    return None if config is None else json.dumps(config, separators=(",", ":"))


def cell_speculative_config(cell: CellCfg, drafter_location: str | None = None) -> str | None:
    """A cell's --speculative-config: its drafter at k, with its batch-size schedule and verification policy."""
    return speculative_config_json(cell.drafter, cell.k, drafter_location, cell.k_schedule, cell.adaptive_verification)
