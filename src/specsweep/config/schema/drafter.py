"""The drafters: none, ngram, a model (MTP, EAGLE-3, DFlash, a draft model), suffix decoding."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from specsweep.config.schema.base import Strict


class NoDrafter(Strict):
    kind: Literal["none"]
    name: str


class NgramDrafter(Strict):
    kind: Literal["ngram"]
    name: str
    prompt_lookup_min: int = Field(ge=1)
    prompt_lookup_max: int = Field(ge=1)


class ModelDrafter(Strict):
    """Drafters that load their own weights: MTP heads, DFlash, EAGLE-3, a small draft model."""

    kind: Literal["mtp", "dflash", "eagle3", "draft_model"]
    name: str
    model: str
    # The target model these draft weights were trained for (a model option name): on any other the drafter
    # proposes tokens of another vocabulary and the cell measures nothing.
    for_model: str
    revision: str | None = None
    # Extra keys copied verbatim into --speculative-config (e.g. dflash's attention_backend).
    speculative_extra: dict[str, str | int | float | bool] = {}
    # The architecture vLLM must know to load these weights (checked in the image before any cell), and the vLLM
    # pull request that added it (named in the fix when the image lacks it).
    vllm_architecture: str | None = None
    vllm_pr: int | None = None
    # vLLM pull requests these weights need that no vLLM release has merged: the image must have applied them
    # (image.apply_vllm_prs; preflight checks the image's build metadata).
    vllm_prs_needed: list[int] = []
    # The target's --attention-backend its model card asks for (preflight checks that the image's vLLM has it).
    target_attention_backend: str | None = None
    # The draft lengths these weights serve (None: any k). A block-diffusion drafter drafts one block: k is fixed.
    k_values: list[int] | None = None


class SuffixDrafter(Strict):
    kind: Literal["suffix"]
    name: str
    suffix_decoding_max_tree_depth: int = Field(default=24, ge=1)
    suffix_decoding_max_spec_factor: float = Field(default=1.0, gt=0)
    suffix_decoding_min_token_prob: float = Field(default=0.1, ge=0, le=1)


DrafterCfg = Annotated[
    Union[NoDrafter, NgramDrafter, ModelDrafter, SuffixDrafter], Field(discriminator="kind")
]


# DFlash drafts its whole block in one parallel pass; every other drafter proposes a chain, position i only after
# i - 1 (so a smaller k is a prefix of a larger k's chain: what the k-advisor replays).
PARALLEL_DRAFTER_KINDS = frozenset({"dflash"})


def drafts_in_chain(kind: str) -> bool:
    return kind != "none" and kind not in PARALLEL_DRAFTER_KINDS
