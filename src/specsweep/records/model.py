"""What the model stage records: the prepared weights vLLM is given."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from specsweep.records.base import Record
from specsweep.records.hub import HubSnapshot


class ModelDetails(BaseModel):
    """How the weights were prepared: a hub snapshot (downloaded and pinned), or a packaged GGUF converted here."""

    hub: HubSnapshot | None = None
    package: str | None = None
    gguf: str | None = None
    # The converter's own account (tensors mapped, dtype): its keys are the converter's.
    conversion: dict[str, Any] = {}
    prepare_env: str | None = None
    seconds: float | None = None


class ModelRecord(Record):
    SCHEMA_VERSION = 1
    name: str
    # What vLLM is given: a local dir (a converted package, or a hub snapshot under HF_HOME).
    location: str
    revision: str | None = None
    source_sha256: str | None = None
    weights_sha256: dict[str, str] = {}
    details: ModelDetails = ModelDetails()
