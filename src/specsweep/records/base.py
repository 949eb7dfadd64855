"""The one contract every record file keeps: its schema version travels in it, and readers refuse a newer one.

A record class sets SCHEMA_VERSION (bumped whenever a field changes meaning or one is added); a record built in code
carries it, and read_record() checks a file's before parsing it. A file without the field predates versioning and
reads as version 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator


class RecordError(ValueError):
    """A record file that cannot be read: missing, not JSON, from a newer specsweep, or not this record."""


class Record(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1

    schema_version: int = Field(default=None, validate_default=True)

    @field_validator("schema_version", mode="before")
    @classmethod
    def _current_when_built(cls, version: int | None) -> int:
        return cls.SCHEMA_VERSION if version is None else version


R = TypeVar("R", bound=Record)


def read_record(cls: type[R], path: str | Path) -> R:
    path = Path(path)
    what = f"{cls.__name__} {path}"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{what} does not exist; run the step that writes it (snakemake builds it)") from None
    except json.JSONDecodeError as err:
        raise RecordError(f"{what} is not JSON ({err}); delete it and rerun the step that writes it") from None
    found = data.get("schema_version", 1) if isinstance(data, dict) else None
    if isinstance(found, int) and found > cls.SCHEMA_VERSION:
        raise RecordError(
            f"{what} has schema {found}, newer than this specsweep reads ({cls.SCHEMA_VERSION}); update specsweep (git "
            "pull, then pip install -e .) or read it with the version that wrote it"
        )
    data.setdefault("schema_version", 1)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise RecordError(f"{what} is not a valid {cls.__name__} ({err.error_count()} problems: "
                          f"{err.errors()[0]['loc']}: {err.errors()[0]['msg']}); delete it and rerun its step") from None
