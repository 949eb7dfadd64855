"""The record contract: every record file carries its schema version, and every read checks it."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import specsweep.records
from specsweep.records.base import Record, RecordError, read_record
from specsweep.records.status import SweepStatus


def record_classes() -> list[type[Record]]:
    for module in pkgutil.iter_modules(specsweep.records.__path__):
        importlib.import_module(f"specsweep.records.{module.name}")

    def below(cls: type) -> list[type]:
        return [sub for child in cls.__subclasses__() for sub in (child, *below(child))]

    return sorted(set(below(Record)), key=lambda cls: cls.__name__)


def test_every_record_file_kind_lives_in_records_and_is_versioned() -> None:
    found = {cls.__name__: cls for cls in record_classes()}
    # The documents steps write and read back: cells, stages, the sweep's last steps, envs, W&B, the k-advisor.
    assert {"CellRecord", "Manifest", "ModelRecord", "QuantRecord", "QualityRecord", "ImageRecord", "PreflightRecord",
            "SweepStatus", "EnvRecord", "WandbReceipt", "Advice", "AdaptiveState"} <= set(found)  # fmt: skip
    for cls in found.values():
        assert cls.__module__.startswith("specsweep.records."), cls
        assert isinstance(cls.SCHEMA_VERSION, int) and cls.SCHEMA_VERSION >= 1
    # Written in code, a record carries its class's version (CellRecord and Manifest are at 2).
    assert found["CellRecord"].SCHEMA_VERSION == 2 and found["Manifest"].SCHEMA_VERSION == 2
    assert SweepStatus(cells=1, ok=1, skipped=0, failed=0).schema_version == SweepStatus.SCHEMA_VERSION


@pytest.mark.parametrize("cls", record_classes(), ids=lambda cls: cls.__name__)
def test_a_record_from_a_newer_specsweep_is_refused_with_the_fix(cls: type[Record], tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"schema_version": cls.SCHEMA_VERSION + 1}))
    with pytest.raises(RecordError, match=rf"schema {cls.SCHEMA_VERSION + 1}, newer than this specsweep reads "
                                          rf"\({cls.SCHEMA_VERSION}\); update specsweep"):  # fmt: skip
        read_record(cls, path)


def test_reading_round_trips_and_names_what_is_wrong(tmp_path: Path) -> None:
    status = SweepStatus(cells=3, ok=2, skipped=1, failed=0)
    path = tmp_path / "status.json"
    path.write_text(status.model_dump_json())
    assert read_record(SweepStatus, path) == status
    # Before versioning a file had no schema_version: it reads as version 1.
    path.write_text(json.dumps({"cells": 1, "ok": 1, "skipped": 0, "failed": 0}))
    assert read_record(SweepStatus, path).schema_version == 1
    with pytest.raises(RecordError, match="does not exist; run the step that writes it"):
        read_record(SweepStatus, tmp_path / "absent.json")
    path.write_text("{not json")
    with pytest.raises(RecordError, match="is not JSON"):
        read_record(SweepStatus, path)
    path.write_text(json.dumps({"cells": 1}))
    with pytest.raises(RecordError, match=r"is not a valid SweepStatus \(3 problems: \('ok',\): Field required\)"):
        read_record(SweepStatus, path)
