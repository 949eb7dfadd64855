"""One resolved cell (every group), the sweep and report settings, and the per-quant quality config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from specsweep.config.schema.base import Strict
from specsweep.config.schema.drafter import DrafterCfg, ModelDrafter
from specsweep.config.schema.image import ImageCfg
from specsweep.config.schema.measure import BenchCfg, EvalCfg, ServeCfg
from specsweep.config.schema.model import HubQuant, ModelCfg, QuantCfg


class SweepCfg(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # Axis -> Hydra sweep value, same syntax as `--multirun key=a,b` (e.g. "1,3,7", "range(1,8)").
    # A list of such grids sweeps their union (e.g. every k for one quant, one k for the other quants).
    params: dict[str, str] | list[dict[str, str]] = {}
    # brute_force: every cell. adaptive: per chain-drafter group, k = 1 and k_max first, then only what the
    # k-advisor predicts could be best (`specsweep adapt` runs the rounds; specsweep.advise.driver).
    strategy: Literal["brute_force", "adaptive"] = "brute_force"

    @property
    def grids(self) -> list[dict[str, str]]:
        return self.params if isinstance(self.params, list) else [self.params]



class WandbCfg(Strict):
    mode: Literal["online", "offline", "disabled"] = "offline"
    project: str = "specsweep"
    entity: str | None = None
    init_timeout_s: float = Field(default=30, gt=0)


class HtmlCfg(Strict):
    dpi: int = Field(default=110, ge=50, le=400)


class ReportCfg(Strict):
    """How a sweep is reported. Per sweep, like SweepCfg: not part of any cell or its hash."""

    name: str = "default"
    wandb: WandbCfg = WandbCfg()
    html: HtmlCfg = HtmlCfg()



# Drafters vLLM's adaptive verification serves (docs/features/spec_decode/adaptive_verification.md, v0.30): EAGLE,
# MTP, DFlash, draft models and suffix decoding; not ngram.
ADAPTIVE_VERIFICATION_DRAFTERS = ("mtp", "dflash", "eagle3", "draft_model", "suffix")


class CellCfg(Strict):
    """Everything that defines one cell. `sweep` is not part of it: a cell means the same in any sweep."""

    model: ModelCfg
    quant: QuantCfg
    drafter: DrafterCfg
    k: int = Field(ge=1, description="num_speculative_tokens")
    # vLLM's dynamic speculative decoding: [[lo, hi, k], ...] draft length by batch size (the k-advisor's schedule);
    # every k in it is at most `k`, the draft length the server is started with.
    k_schedule: list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=3, max_length=3)]] | None = None
    # vLLM's acceptance-based adaptive verification (`enable_adaptive_verification` in --speculative-config, vLLM PRs
    # 47808 and 52228, v0.30+): the server verifies fewer of the k drafted tokens where acceptance is low. A cell axis,
    # so a sweep compares it with fixed k and with k_schedule.
    adaptive_verification: bool = False
    serve: ServeCfg
    image: ImageCfg
    bench: BenchCfg
    eval: EvalCfg

    @model_validator(mode="after")
    def _schedule_fits_k(self) -> "CellCfg":
        if self.k_schedule is None:
            return self
        if self.drafter.kind == "none":
            raise ValueError("k_schedule sets draft lengths by batch size, but drafter=none drafts nothing; pick a drafter")
        if too_long := [entry for entry in self.k_schedule if entry[2] > self.k]:
            raise ValueError(f"k_schedule entries {too_long} draft more than k={self.k}; set k to the schedule's largest k")
        return self

    @model_validator(mode="after")
    def _adaptive_needs_a_model_drafter(self) -> "CellCfg":
        if self.adaptive_verification and self.drafter.kind not in ADAPTIVE_VERIFICATION_DRAFTERS:
            raise ValueError(
                f"adaptive_verification=true with drafter={self.drafter.name} ({self.drafter.kind}): vLLM verifies "
                f"adaptively for {', '.join(ADAPTIVE_VERIFICATION_DRAFTERS)} drafters only; pick one, or drop it"
            )
        return self

    @model_validator(mode="after")
    def _quant_fits_model(self) -> "CellCfg":
        if isinstance(self.quant, HubQuant) and self.quant.for_model != self.model.name:
            raise ValueError(
                f"quant {self.quant.name} is a checkpoint of model {self.quant.for_model}, not {self.model.name}; "
                f"pick model={self.quant.for_model} or a local quant recipe"
            )
        too_long = [w.name for w in self.bench.workloads if self.serve.max_model_len and w.max_tokens >= self.serve.max_model_len]
        if too_long:
            raise ValueError(
                f"workloads {', '.join(too_long)} ask for max_tokens >= serve.max_model_len ({self.serve.max_model_len}), "
                "leaving no room for the prompt; lower their max_tokens or raise serve.max_model_len"
            )
        if isinstance(self.drafter, ModelDrafter) and self.drafter.for_model != self.model.name:
            raise ValueError(
                f"drafter {self.drafter.name} ({self.drafter.model}) drafts for model {self.drafter.for_model}, not "
                f"{self.model.name}; pick model={self.drafter.for_model}, or a model-free drafter (ngram, suffix, none)"
            )
        if isinstance(self.drafter, ModelDrafter) and self.drafter.k_values and self.k not in self.drafter.k_values:
            raise ValueError(
                f"drafter {self.drafter.name} drafts k in {self.drafter.k_values} only (its trained block), not k={self.k}; "
                f"set k={self.drafter.k_values[0]}"
            )
        cluster = getattr(self.image, "container", None)
        nodes = len(cluster.cluster.nodes) if cluster else 0
        tp = self.serve.tensor_parallel_size or 1
        if nodes >= 2 and tp != nodes:
            raise ValueError(
                f"image.container.cluster.nodes lists {nodes} nodes but serve.tensor_parallel_size is {tp}: one GPU per "
                f"Spark, so set serve.tensor_parallel_size={nodes} (launch-cluster.sh needs TP x PP x DP nodes)"
            )
        if nodes < 2 and tp > 1 and cluster is not None and cluster.gpus:
            raise ValueError(
                f"serve.tensor_parallel_size={tp} needs {tp} Sparks: name their cluster-network IPs, this node's first: "
                f"--config overrides=\"image.container.cluster.nodes=[{','.join(f'IP{i}' for i in range(1, tp + 1))}]\""
            )
        return self



class QualityCfg(Strict):
    """How each quant's quality is measured: perplexity and KL divergence vs the base on held-out text."""

    name: str
    text: str
    window: int = Field(ge=16)
    num_windows: int = Field(ge=1)
    # Top-k kept per position: the served endpoint returns at most vLLM's --max-logprobs (20 by default).
    top_k: int = Field(default=20, ge=1)
    # Also in-process on the host (full distributions, the check of the served figures). False for models the host
    # cannot forward in float32 (the Spark's 31B: 124 GB): their quants are measured through their servers only.
    in_process: bool = True
