"""What the quantize stage records: the checkpoint cells serve."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from specsweep.records.base import Record
from specsweep.records.hub import HubSnapshot


class CalibrationFacts(BaseModel):
    """The calibration text as the quantizer used it."""

    kind: str
    path: str | None = None
    sha256: str | None = None
    num_samples: int | None = None
    seq_len: int | None = None
    text_tokens: int | None = None
    window_starts: list[int] = []


class QuantManifest(BaseModel):
    """What a checkpoint is made of. Quantized here: the recipe as configured and as applied, the calibration, the
    package versions, the base it came from and every file's sha256 (quant_manifest.json next to the checkpoint).
    The base itself: its weights' sha256. A hub checkpoint: its repo, revision and pinned snapshot."""

    model: str | None = None
    quant: str | None = None
    kind: str | None = None
    scheme: str | None = None
    # The quant's config node and what the quantizer applied: their keys are the quantizer's (GPTQ, AutoRound).
    recipe: dict[str, Any] | None = None
    applied: dict[str, Any] = {}
    calibration: CalibrationFacts | None = None
    versions: dict[str, str] = {}
    # Where job.py ran: the model-tools env's key, or the image and the tools image built on it (and its id).
    quantize_env: str | None = None
    quantize_image_id: str | None = None
    wall_s: float | None = None
    job_wall_s: float | None = None
    peak_rss_mb: float | None = None
    base: dict[str, Any] | None = None
    files_sha256: dict[str, str] = {}
    created_at: str | None = None
    base_weights_sha256: dict[str, str] = {}
    repo_id: str | None = None
    revision: str | None = None
    for_model: str | None = None
    hub: HubSnapshot | None = None


class QuantRecord(Record):
    """What the quantize stage hands to cells and to the quality stage."""

    SCHEMA_VERSION = 2
    model: str
    quant: str
    kind: str
    scheme: str
    # What vLLM is given: a local checkpoint dir (quantized here, or a hub snapshot pinned to `revision`, a commit).
    location: str
    revision: str | None = None
    # The quant is the base itself (no quantization): quality compares it with itself.
    is_base: bool = False
    manifest: QuantManifest = QuantManifest()
