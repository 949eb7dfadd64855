"""What the quantize stage records: the checkpoint cells serve."""

from __future__ import annotations

from pydantic import BaseModel


class QuantRecord(BaseModel):
    """What the quantize stage hands to cells and to the quality stage."""

    # Bumped whenever a field changes meaning or one is added.
    schema_version: int = 1
    model: str
    quant: str
    kind: str
    scheme: str
    # What vLLM is given: a local checkpoint dir (quantized here, or a hub snapshot pinned to `revision`, a commit).
    location: str
    revision: str | None = None
    # The quant is the base itself (no quantization): quality compares it with itself.
    is_base: bool = False
    manifest: dict = {}
