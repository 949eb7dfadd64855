"""The quantize stage: one compressed-tensors checkpoint per (model, quant), cached by content.

A registry keyed by quant `kind`: `none` serves the base as is, `hub` records a pinned pre-quantized repo,
`llmcompressor` and `autoround` run `job.py` in the quantizer: the host's model-tools env, or (image.quantizer.where
= image) a container of the sweep's image with the tools layered on its torch (specsweep.quantize.in_image). The
checkpoint is built in a staging dir and renamed into place with its `quant_manifest.json` (recipe as applied, calibration identity and
hash, tool versions, wall time, peak RAM, sha256 of every file), so a crash never leaves a checkpoint
that looks complete, and every clone, CI run and sweep reuses a finished one once its files still match
the manifest (a corrupt one is rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from specsweep.atomic import write_json
from specsweep.cache_check import QUANT_MANIFEST as MANIFEST
from specsweep.cache_check import reusable, sha256_file
from specsweep.config.schema import (
    GROUPED_SCHEMES,
    AutoRoundQuant,
    HubDatasetCalibration,
    LlmCompressorQuant,
    ModelCfg,
    QuantCfg,
    TextFileCalibration,
)
from specsweep.envs import model_tools_env
from specsweep.exit_status import describe_exit
from specsweep.models.hub import fetch_snapshot
from specsweep.paths import cache_dir, project_relative
from specsweep.records.env import EnvRecord
from specsweep.records.image import ImageRecord
from specsweep.records.model import ModelRecord
from specsweep.records.quant import QuantRecord
from specsweep.staging import staged_dir

JOB = Path(__file__).with_name("job.py")


def quant_scheme(quant: QuantCfg) -> str:
    return quant.scheme


def calibration_path(quant: QuantCfg) -> Path | None:
    calibration = getattr(quant, "calibration", None)
    if isinstance(calibration, TextFileCalibration):
        return project_relative(calibration.path)
    return None


def check_recipe(quant: QuantCfg, model: ModelCfg, base: ModelRecord) -> None:
    """Checks that need the prepared base (layer widths) or the filesystem; run before any heavy work."""
    path = calibration_path(quant)
    if path is not None and not path.is_file():
        raise ValueError(
            f"quant {quant.name}: calibration file {path} does not exist; ship it under data/calibration/ "
            "or point quant.calibration.path at an existing file"
        )
    if isinstance(getattr(quant, "calibration", None), HubDatasetCalibration) and model.source.kind != "hub":
        raise ValueError(
            f"quant {quant.name}: a hub calibration dataset on model {model.name}, whose weights are packaged: "
            "the embedded path never downloads data; use a text_file calibration from data/calibration/"
        )
    group_size = getattr(quant, "group_size", None)
    scheme = quant_scheme(quant)
    if group_size is None and scheme in GROUPED_SCHEMES:
        group_size = 128
    if group_size is None or not Path(base.location, "config.json").is_file():
        return
    widths = linear_input_widths(json.loads(Path(base.location, "config.json").read_text()))
    bad = {name: width for name, width in widths.items() if width % group_size}
    if bad:
        divisors = sorted(d for d in (16, 32, 64, 128, 256) if all(w % d == 0 for w in widths.values()))
        raise ValueError(
            f"quant {quant.name}: group_size {group_size} does not divide the input width of "
            + ", ".join(f"{name} ({width})" for name, width in bad.items())
            + f" in {model.name}; use one of {divisors}"
        )


def linear_input_widths(config: dict) -> dict[str, int]:
    """Input widths of a decoder's quantized Linear layers: group-wise quantization splits these."""
    text = config.get("text_config", config)
    hidden = text["hidden_size"]
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim") or hidden // heads
    return {
        "q/k/v/gate/up_proj": hidden,
        "o_proj": heads * head_dim,
        "down_proj": text["intermediate_size"],
    }


class Quantizer:
    """Where job.py runs. `identity` keys the checkpoint cache; `name` and `image_id` (known once it ran) go in the
    checkpoint's manifest. Every path is the same on the host and in a quantizer's container (mounted at itself)."""

    name: str
    identity: str
    image_id: str | None = None

    def run(self, spec: Path, read_only: list[str], writable: list[str]) -> int:
        raise NotImplementedError


class HostQuantizer(Quantizer):
    def __init__(self, env: EnvRecord) -> None:
        self.env, self.name, self.identity = env, env.key, env.requirements_sha256

    def run(self, spec: Path, read_only: list[str], writable: list[str]) -> int:
        return subprocess.run([str(self.env.python_bin), str(JOB), str(spec)], stdin=subprocess.DEVNULL).returncode


class ImageQuantizer(Quantizer):
    """Inside the sweep's image (specsweep.quantize.in_image). Keyed without building anything: a sweep whose
    checkpoints are cached never builds the tools image."""

    def __init__(self, cfg, record: ImageRecord) -> None:
        from specsweep.quantize.in_image import tools_key

        self.cfg, self.record = cfg, record
        key = tools_key(record.location, cfg.quantizer)
        self.name, self.identity = f"image {record.name}: specsweep/quantize-tools:{key}", f"image:{key}"

    def run(self, spec: Path, read_only: list[str], writable: list[str]) -> int:
        from specsweep.quantize import in_image

        tools = in_image.ensure_tools_image(self.cfg, self.record)
        self.image_id = tools.id
        return in_image.run_job(self.cfg, tools, JOB, spec, read_only, writable)


def quantizes_in_image(image_cfg) -> bool:
    """The image makes its sweeps' quants inside itself (image.quantizer.where = image; container images only)."""
    quantizer = getattr(image_cfg, "quantizer", None)
    return quantizer is not None and quantizer.where == "image"


def quantizer_for(image: tuple[object, ImageRecord] | None) -> Quantizer:
    """The model-tools env, unless the sweep's image quantizes inside itself."""
    if image is None or not quantizes_in_image(image[0]):
        return HostQuantizer(model_tools_env())
    return ImageQuantizer(*image)


def _identity(quant: QuantCfg, base: ModelRecord, quantizer: Quantizer) -> str:
    calibration = calibration_path(quant)
    identity = {
        "quant": quant.model_dump(mode="json"),
        "base": base.location,
        "base_weights": base.weights_sha256,
        "env": quantizer.identity,
        "job": sha256_file(JOB),
        "calibration": sha256_file(calibration) if calibration else None,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- registry

# (quant, model, base, the sweep's image config and record or None) -> the checkpoint's record
QuantFunction = Callable[[QuantCfg, ModelCfg, ModelRecord, "tuple[object, ImageRecord] | None"], QuantRecord]
QUANTIZERS: dict[str, QuantFunction] = {}


def quant_kind(kind: str) -> Callable[[QuantFunction], QuantFunction]:
    def register(function: QuantFunction) -> QuantFunction:
        QUANTIZERS[kind] = function
        return function

    return register


def quantize(quant: QuantCfg, model: ModelCfg, base: ModelRecord, image: tuple[object, ImageRecord] | None = None) -> QuantRecord:
    check_recipe(quant, model, base)
    return QUANTIZERS[quant.kind](quant, model, base, image)


@quant_kind("none")
def _no_quant(quant, model, base, image) -> QuantRecord:
    return QuantRecord(
        model=model.name,
        quant=quant.name,
        kind=quant.kind,
        scheme="none",
        location=base.location,
        revision=base.revision,
        is_base=True,
        manifest={"base_weights_sha256": base.weights_sha256},
    )


@quant_kind("hub")
def _hub_quant(quant, model, base, image) -> QuantRecord:
    """A published checkpoint: downloaded into HF_HOME and pinned to a commit before any cell serves it."""
    snapshot = fetch_snapshot(quant.repo_id, quant.revision)
    return QuantRecord(
        model=model.name,
        quant=quant.name,
        kind=quant.kind,
        scheme=quant.scheme,
        location=snapshot.local_dir,
        revision=snapshot.commit,
        manifest={"repo_id": quant.repo_id, "revision": quant.revision, "for_model": quant.for_model,
                  "hub": snapshot.model_dump()},  # fmt: skip
    )


def _job_spec(quant: LlmCompressorQuant | AutoRoundQuant, base_dir: str, out_dir: Path) -> dict:
    spec: dict = {"base_dir": base_dir, "out_dir": str(out_dir), "recipe": quant.model_dump(mode="json")}
    calibration = getattr(quant, "calibration", None)
    if calibration is not None:
        spec["calibration"] = calibration.model_dump(mode="json")
        path = calibration_path(quant)
        if path is not None:
            spec["calibration"].update(path=str(path), display_path=calibration.path)
    return spec


@quant_kind("llmcompressor")
@quant_kind("autoround")
def _local_quant(quant, model, base, image) -> QuantRecord:
    quantizer = quantizer_for(image)
    out = cache_dir() / "quants" / f"{model.name}-{quant.name}-{_identity(quant, base, quantizer)}"
    if not reusable(out):
        _build_checkpoint(quant, model, base, quantizer, out)
    manifest = json.loads((out / MANIFEST).read_text())
    return QuantRecord(
        model=model.name, quant=quant.name, kind=quant.kind, scheme=quant_scheme(quant), location=str(out), manifest=manifest
    )


def _build_checkpoint(quant, model: ModelCfg, base: ModelRecord, quantizer: Quantizer, out: Path) -> None:
    print(f"[quantize] {model.name} / {quant.name} ({quant.kind}, {quant_scheme(quant)}) in {quantizer.name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with staged_dir(out) as staging:
        # Named after the staging dir, so a killed build's leftovers are removed with it (job.py puts an
        # auto-round export at `<staging>.export`).
        spec_file = staging.with_name(staging.name + ".spec.json")
        export = staging.with_name(staging.name + ".export")
        try:
            write_json(spec_file, _job_spec(quant, base.location, staging))
            calibration = calibration_path(quant)
            returncode = quantizer.run(spec_file, [base.location, *([str(calibration)] if calibration else [])], [str(out.parent)])
            if returncode != 0:
                raise RuntimeError(
                    f"quantizing {model.name} with {quant.name} failed ({describe_exit(returncode)}); the job's output "
                    "is above in this log. Fix the recipe in conf/quant/ and rerun."
                )
            applied = json.loads((staging / "applied.json").read_text())
            (staging / "applied.json").unlink()
            files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
            manifest = {
                "model": model.name,
                "quant": quant.name,
                "kind": quant.kind,
                "scheme": quant_scheme(quant),
                "recipe": quant.model_dump(mode="json"),
                "applied": applied["applied"],
                "calibration": applied["calibration"],
                "versions": applied["versions"],
                "quantize_env": quantizer.name,
                "quantize_image_id": quantizer.image_id,
                "wall_s": applied["wall_s"],
                "job_wall_s": round(time.monotonic() - started, 1),
                "peak_rss_mb": applied["peak_rss_mb"],
                "base": {"location": base.location, "weights_sha256": base.weights_sha256},
                "files_sha256": files,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            write_json(staging / MANIFEST, manifest)
        finally:
            spec_file.unlink(missing_ok=True)
            shutil.rmtree(export, ignore_errors=True)
