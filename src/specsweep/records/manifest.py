"""The manifest every cell carries: enough to tell exactly what produced its numbers."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from typing import Any

import psutil

import specsweep
from specsweep.config.secrets import REDACTED, is_secret_key
from specsweep.paths import project_root
from specsweep.records.base import Record
from specsweep.records.host import CpuFacts, ServingChoice, read_cpu_facts
from specsweep.records.image import ImageRecord
from specsweep.records.model import ModelRecord
from specsweep.records.quant import QuantRecord


class Manifest(Record):
    """A cell's reproduction record (manifest.json): code, config, image, weights, hardware, the server's argv."""

    SCHEMA_VERSION = 2
    specsweep_version: str
    git_sha: str | None
    git_dirty: bool | None
    sweep: str
    cell_id: str
    config_hash: str
    # The resolved cell config the hash is of (the same as config.yaml next to it): the record stands alone.
    config: dict[str, Any] = {}
    overrides: list[str]
    image_name: str
    image_kind: str
    image_key: str
    # What served the cell: the venv root, or the container image's id (cells run images by id, never by tag).
    image_location: str = ""
    image_details: dict[str, Any] = {}
    vllm_version: str
    # The vLLM commit and the PRs applied on top of it, where the image records them (build-metadata.yaml).
    vllm_commit: str | None = None
    vllm_prs: list[int] = []
    model_name: str
    model_location: str
    model_revision: str | None
    model_source_sha256: str | None
    model_weights_sha256: dict[str, str]
    quant_name: str
    quant_kind: str | None = None
    quant_scheme: str
    # What vLLM served: the quantized checkpoint (or the base for no quantization), and its files' sha256.
    quant_location: str
    quant_revision: str | None
    quant_recipe_sha256: str | None
    quant_files_sha256: dict[str, str]
    # The calibration text's sha256 where the recipe calibrates (GPTQ, AutoRound).
    quant_calibration_sha256: str | None = None
    drafter_model: str | None
    drafter_revision: str | None
    server_argv: list[str]
    server_env: dict[str, str]
    # Names handed to the server from the caller's environment (serve.forward_env); never their values.
    server_env_forwarded: list[str] = []
    hardware: dict[str, str | int | float]
    # nvidia-smi's view of each GPU (name, driver, memory); None on a host without one.
    gpu: list[dict[str, str | float | None]] | None = None
    # CPU images: the host's CPU model and flags, and the dtype and int4 kernel they decided.
    host_cpu: CpuFacts | None = None
    serving: ServingChoice | None = None
    seed: int
    started_at: str
    finished_at: str


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {key: (REDACTED if is_secret_key(key) else value) for key, value in env.items()}


def git_state() -> tuple[str | None, bool | None]:
    root = project_root()
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return sha, dirty
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None, None


def hardware() -> dict[str, str | int | float]:
    model = read_cpu_facts().model
    cpu = model if model != "unknown" else platform.processor() or platform.machine()
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count() or 0,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "system": platform.platform(),
    }


GPU_QUERY = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"]


def parse_gpus(csv_text: str) -> list[dict[str, str | float | None]]:
    """nvidia-smi's CSV: one GPU per line; memory in MiB, "[N/A]" where the GPU has none of its own (GB10's
    unified memory)."""
    gpus = []
    for line in csv_text.strip().splitlines():
        name, driver, memory = (field.strip() for field in line.split(","))
        gpus.append({"name": name, "driver": driver,
                     "memory_total_mib": None if memory.startswith("[") else float(memory)})  # fmt: skip
    return gpus


def gpu() -> list[dict[str, str | float | None]] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(GPU_QUERY, capture_output=True, text=True, timeout=60)
    return parse_gpus(result.stdout) if result.returncode == 0 and result.stdout.strip() else None


def model_fields(model: ModelRecord) -> dict:
    return {
        "model_name": model.name,
        "model_location": model.location,
        "model_revision": model.revision,
        "model_source_sha256": model.source_sha256,
        "model_weights_sha256": model.weights_sha256,
    }


def quant_fields(quant: QuantRecord) -> dict:
    recipe = quant.manifest.recipe
    return {
        "quant_name": quant.quant,
        # "none" marks the base itself: the reference of every quant's quality figures.
        "quant_kind": quant.kind,
        "quant_scheme": quant.scheme,
        "quant_location": quant.location,
        "quant_revision": quant.revision,
        "quant_recipe_sha256": (
            hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest() if recipe else None
        ),
        "quant_files_sha256": quant.manifest.files_sha256,
        "quant_calibration_sha256": quant.manifest.calibration.sha256 if quant.manifest.calibration else None,
    }


def image_fields(image: ImageRecord) -> dict:
    return {
        "image_name": image.name,
        "image_kind": image.kind,
        "image_key": image.key,
        "image_location": image.location,
        "image_details": image.details.model_dump() if image.details else {},
        "vllm_version": image.vllm_version,
        "vllm_commit": image.vllm_commit,
        "vllm_prs": image.vllm_prs,
    }


def version() -> str:
    return specsweep.__version__
