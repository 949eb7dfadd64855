"""A failed cell: its record, the table and reports around it, and the sweep's status step that fails the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from report_inputs import CELLS, DATA, make_sweep_dir, todays_manifest

from specsweep.records.cell import FAILURE_RECORD, CellRecord
from specsweep.records.status import SweepFailed, check_sweep, status_text
from specsweep.records.table import build_table
from specsweep.report import html, markdown
from specsweep.report.data import failed, load_sweep

FAILED_CELL = "gemma3_270m-w4a16_gptq-none"
LOG_TAIL = [f"(EngineCore pid=1) line {i}" for i in range(45)] + [
    'RuntimeError: "cpu_gemm_wna16" not implemented for \'Float\'',
    "ERROR [core.py] EngineCore encountered a fatal error.",
]


def with_failed_cell(sweep_dir: Path) -> Path:
    target = sweep_dir / FAILED_CELL
    target.mkdir()
    record = CellRecord(
        sweep="embedded", cell_id=FAILED_CELL, status="failed", model="gemma3_270m", quant="w4a16_gptq",
        drafter="none", drafter_kind="none", k=None, speculative_config=None, dtype="float32",
        error="vLLM exited with code 1 during the workloads", server_log_tail=LOG_TAIL,
    )  # fmt: skip
    (target / "bench.json").write_text(record.model_dump_json())
    (target / "manifest.json").write_text(json.dumps(todays_manifest(DATA / CELLS[0] / "manifest.json", FAILED_CELL)))
    shutil.copy2(DATA / CELLS[0] / "config.yaml", target / "config.yaml")
    cell_dirs = sorted(p for p in sweep_dir.iterdir() if (p / "bench.json").is_file())
    build_table(cell_dirs).to_csv(sweep_dir / "table.csv", index=False)
    return sweep_dir


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return with_failed_cell(make_sweep_dir(tmp_path / "results"))


def test_the_failed_cell_is_one_row_with_its_reason_and_log_tail(sweep_dir: Path) -> None:
    table = pd.read_csv(sweep_dir / "table.csv")
    row = table[table.cell_id == FAILED_CELL]
    assert len(row) == 1 and row.status.item() == "failed" and pd.isna(row.workload.item())
    assert row.error.item() == "vLLM exited with code 1 during the workloads"
    assert row.server_log_tail.item().splitlines()[-1] == LOG_TAIL[-1]
    # The other cells' measurements are all still there.
    assert (table[table.cell_id != FAILED_CELL].status != "failed").all()
    assert table[table.status == "ok"].tg_tps_mean.notna().all()


def test_reports_list_the_failed_cell_with_reason_and_last_lines(sweep_dir: Path) -> None:
    data = load_sweep(sweep_dir)
    assert list(failed(data.table).cell_id) == [FAILED_CELL]
    text = markdown.render(data)
    section = text[text.index("## Failed cells"):]
    assert f"`{FAILED_CELL}`: vLLM exited with code 1" in section and "not implemented for 'Float'" in section
    page = html.render(data, dpi=60)
    assert "1 failed)" in page and "Failed cells" in page and "not implemented for &#x27;Float&#x27;" in page


def test_status_step_fails_naming_the_cell_and_frees_it_for_a_rerun(sweep_dir: Path, tmp_path: Path) -> None:
    bench = sorted(str(p) for p in sweep_dir.glob("*/bench.json"))
    status, log = sweep_dir / "status.json", tmp_path / "status.log"
    with pytest.raises(SweepFailed) as failure:
        check_sweep(bench, status, log)
    message = str(failure.value)
    assert message.startswith(f"1 of {len(bench)} cells failed")
    assert f"{FAILED_CELL}: vLLM exited with code 1" in message and "EngineCore encountered a fatal error" in message
    assert log.read_text().strip() == message
    assert not status.exists()
    # The record stays readable; without bench.json (the Snakemake target) the next run reruns just this cell.
    cell_dir = sweep_dir / FAILED_CELL
    assert not (cell_dir / "bench.json").exists()
    assert CellRecord.model_validate_json((cell_dir / FAILURE_RECORD).read_text()).status == "failed"
    assert all((Path(p).is_file()) for p in bench if FAILED_CELL not in p)


def test_status_step_passes_when_no_cell_failed(tmp_path: Path) -> None:
    sweep_dir = make_sweep_dir(tmp_path / "results")
    bench = sorted(str(p) for p in sweep_dir.glob("*/bench.json"))
    status = check_sweep(bench, sweep_dir / "status.json")
    assert status.model_dump() == {"schema_version": 1, "cells": len(bench), "ok": len(bench) - 1, "skipped": 1, "failed": 0}
    assert status_text(sweep_dir / "status.json").endswith(f"{len(bench) - 1} measured, 1 skipped, 0 failed")
