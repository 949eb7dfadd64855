"""What the model stage records: the prepared weights vLLM is given."""

from __future__ import annotations

from pydantic import BaseModel


class ModelRecord(BaseModel):
    # Bumped whenever a field changes meaning or one is added.
    schema_version: int = 1
    name: str
    # What vLLM is given: a local dir (a converted package, or a hub snapshot under HF_HOME).
    location: str
    revision: str | None = None
    source_sha256: str | None = None
    weights_sha256: dict[str, str] = {}
    details: dict = {}
