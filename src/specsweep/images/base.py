"""Image registry: every image kind builds (or finds) its server environment and records it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from specsweep.atomic import write_json
from specsweep.config.schema import CellCfg, ImageCfg, ModelDrafter
from specsweep.exit_status import describe_exit
from specsweep.images.cpu_host import FALLBACK_ENV, uses_wna16
from specsweep.images.preload import ld_preload
from specsweep.paths import cache_dir
from specsweep.records.host import ServingChoice
from specsweep.records.image import ImageRecord
from specsweep.serve.argv import ServerCommand

# vLLM's switch to Model Runner V2, which adaptive verification needs.
MODEL_RUNNER_V2_ENV = "VLLM_USE_V2_MODEL_RUNNER"


class ImageBackend(ABC):
    """One image kind's whole lifecycle: build (or find) and record, run Python inside for probes and the preflight,
    launch vLLM and stop it. Everything that differs between a venv and a container lives behind these methods."""

    kind: ClassVar[str]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @abstractmethod
    def build(self) -> ImageRecord:
        """Build the image (or find the one this config already built) and record it."""

    @abstractmethod
    def preview(self) -> ImageRecord:
        """What build() would record, as far as it is known without building (for `specsweep config`)."""

    @abstractmethod
    def python_at(self, location: str) -> list[str]:
        """argv that runs the Python of the image at `location` on a program read from stdin (`... python -`),
        offline."""

    def probe(self, location: str, program: str, what: str) -> dict:
        """Run `program` in the image; its last output line, as JSON. Cached per image, program and host CPU: an
        image (a content-addressed venv, a container image id) never changes, so neither does the answer, and a
        container start costs half a minute on engines without overlay storage."""
        from specsweep.records.host import read_cpu_facts

        identity = json.dumps([location, program, read_cpu_facts().model_dump_json()])
        cached = cache_dir() / "probes" / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        result = subprocess.run(self.python_at(location), input=program, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(
                f"{what} failed inside image {location[:19]} ({describe_exit(result.returncode)}): "
                f"{result.stderr.strip()[-1500:]}"
            )
        found = json.loads(result.stdout.strip().splitlines()[-1])
        write_json(cached, found)
        return found

    @abstractmethod
    def server_command(self, record: ImageRecord, launch: LaunchSpec) -> ServerCommand:
        """The argv (and environment) that runs vLLM for one cell."""

    @abstractmethod
    def check_intact(self, record: ImageRecord, receipt: str) -> None:
        """Raise CorruptEntry when what the record names is gone or changed (checked before a cell serves)."""

    def launch_env(self, cell: CellCfg, record: ImageRecord, serving: ServingChoice | None) -> dict[str, str]:
        """Settings the server process gets from this image: its preloads (the server only: specsweep and Snakemake
        keep the system allocator and OpenMP), the int4 fallback the host's serving choice asks for, and the model
        runner a cell's options need."""
        env = {}
        if serving is not None and serving.fallback and uses_wna16(cell.quant.scheme):
            env[FALLBACK_ENV] = "1"
        if record.preload:
            env["LD_PRELOAD"] = ld_preload(record.preload)
        if cell.adaptive_verification:
            # Model Runner V1 refuses it ("Model Runner V1 does not support: adaptive draft verification").
            env[MODEL_RUNNER_V2_ENV] = "1"
        return env

    def before_start(self, record: ImageRecord, launch: LaunchSpec) -> None:
        """Clear what would stop the server from starting (a leftover container of the same name)."""

    def stop(self, launch: LaunchSpec) -> None:
        """Stop what the server command started beyond its own process (a container)."""

    def upgrade_fix(self, what: str) -> str:
        """How to get a vLLM that has `what`, in this kind's config terms."""
        return f"pin a vLLM that has {what} in image.requirements"

    def pr_fix(self, pr: int) -> str:
        return f"use a vLLM that includes vLLM PR {pr} (pin a newer release in image.requirements)"


@dataclass(frozen=True)
class LaunchSpec:
    """What a cell asks of its server, independent of where it runs."""

    cell: CellCfg
    model_location: str
    port: int
    # The container name (or process label) of this cell's server: stable per sweep and cell.
    name: str
    # The serving dtype decided for this host (CPU images); None passes the model's own.
    dtype: str | None
    # Settings added to the server's environment (config values and specsweep's markers; never secrets).
    env: dict[str, str]
    # Labels on what the launch leaves running (containers), so a later run finds and removes leftovers.
    labels: dict[str, str]
    # The drafter's prepared local snapshot (hub drafters on hosts that download); None: its hub id, or no drafter.
    drafter_location: str | None = None

    @property
    def model_is_local(self) -> bool:
        return self.model_location.startswith("/")


BACKENDS: dict[str, type[ImageBackend]] = {}


def image_kind(kind: str) -> Callable[[type[ImageBackend]], type[ImageBackend]]:
    def register(cls: type[ImageBackend]) -> type[ImageBackend]:
        cls.kind = kind
        BACKENDS[kind] = cls
        return cls

    return register


def backend_of(image: ImageCfg) -> ImageBackend:
    """The backend of the image's kind (each registers itself in specsweep.images, imported before this module)."""
    return BACKENDS[image.kind](image)


def build_image(image: ImageCfg) -> ImageRecord:
    return backend_of(image).build()


def preview_record(name: str, kind: str, location: str, offline: bool, serving: dict | None = None) -> ImageRecord:
    """What build() would record as far as config and host tell; CPU kinds (which pass the host's serving choices)
    also name this host's CPU, as their built record does."""
    from specsweep.records.host import read_cpu_facts

    return ImageRecord(name=name, kind=kind, location=location, vllm_version="(not built yet)", key="", packages=[],
                       build_seconds=0, built_at="", offline=offline, serving_by_dtype=serving or {},
                       host_cpu=read_cpu_facts() if serving else None)  # fmt: skip


def unsupported_reason(cell: CellCfg, image: ImageRecord) -> str | None:
    """Why this platform cannot serve the cell, or None. Such cells are recorded as skipped, not failed."""
    scheme = cell.quant.scheme
    servable = cell.image.servable_quant_schemes
    if servable is not None and scheme not in servable:
        why = cell.image.unservable_reasons.get(scheme, f"image {image.name} serves only {', '.join(servable)}")
        return f"quant {cell.quant.name} ({scheme}) cannot be served here: {why}"
    if cell.adaptive_verification and image.host_cpu is not None:
        return (
            f"adaptive verification needs full CUDA graphs (vLLM: \"Adaptive verification requires full CUDA graphs\") "
            f"and Model Runner V2; image {image.name} serves on the CPU"
        )
    drafter = cell.drafter
    if image.offline and isinstance(drafter, ModelDrafter):
        return (
            f"drafter {drafter.name} needs hub weights ({drafter.model}); image {image.name} is offline "
            "and the embedded path never downloads weights"
        )
    return None

