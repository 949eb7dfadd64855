"""Reports of the real embedded sweep (shares the session's `swept` run): W&B runs, HTML, report settings reruns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from chromium import assert_report_renders
from project import E2E_OVERRIDES, project_env

pytestmark = pytest.mark.slow

WANDB = str(Path(sys.executable).parent / "wandb")


def cells(project: Path) -> list[str]:
    """Every cell of the sweep, served or skipped: each gets its W&B run."""
    return sorted(path.parent.name for path in (project / "results/embedded").glob("*/bench.json"))


def receipts(project: Path) -> dict[str, dict]:
    sweep = project / "results/embedded"
    found = {cell: json.loads((sweep / cell / "wandb.json").read_text()) for cell in cells(project)}
    found["sweep"] = json.loads((sweep / "wandb.json").read_text())
    return found


def run_ids_on_disk(project: Path) -> list[str]:
    return sorted(p.name.split("-", 3)[-1] for p in (project / "results/embedded/wandb").glob("offline-run-*"))


def leet(run_dir: Path) -> dict:
    result = subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(run_dir)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_each_cell_has_an_offline_run_with_config_group_and_metrics(swept: Path) -> None:
    table = pd.read_csv(swept / "results/embedded/table.csv")
    for cell, receipt in receipts(swept).items():
        assert receipt["mode_used"] == "offline" and receipt["group"] == "embedded", receipt
        shown = leet(swept / "results/embedded" / receipt["run_dir"])
        assert shown["state"] == "finished" and shown["run_id"] == receipt["run_id"]
        if cell == "sweep":
            assert shown["summary"]["results"]["nrows"] == len(table)
            continue
        assert shown["config"]["specsweep"]["cell_id"] == cell and shown["config"]["specsweep"]["sweep"] == "embedded"
        rows = table[table.cell_id == cell]
        if (rows.status == "ok").all():
            first = rows[(rows.workload == "code_edit") & (rows.concurrency == 1)].iloc[0]
            assert shown["summary"]["code_edit_c1/tg_tps_mean"] == pytest.approx(first.tg_tps_mean)
        records = subprocess.run([WANDB, "leet", "inspect", "--json", str(swept / "results/embedded" / receipt["run_dir"])],
                                 capture_output=True, text=True, timeout=120).stdout  # fmt: skip
        run = next(json.loads(l)["run"] for l in records.splitlines() if '"type":"run"' in l)
        assert run["run_group"] == "embedded" and run["job_type"] == "run_cell"
    assert len(cells(swept)) == 9
    # Every W&B job reran (the mode changed) and reused its run id: still one run per cell plus the sweep's.
    assert len(run_ids_on_disk(swept)) == len(cells(swept)) + 1


def test_report_files_render_and_spec_is_bound_to_the_sweep(swept: Path, tmp_path: Path) -> None:
    sweep = swept / "results/embedded"
    assert_report_renders(sweep / "report.html", tmp_path / "report.png", figures=7)
    spec = json.loads((sweep / "wandb_report.json").read_text())
    assert {p["title"] for p in spec["panels"]} >= {"tg t/s vs k (ngram, one line per quant)",
                                                    "acceptance by draft position (ngram, one line per cell)"}
    text = (sweep / "tables.md").read_text()
    table = pd.read_csv(sweep / "table.csv")
    served = sorted(set(table[table.status == "ok"].cell_id))
    assert len(served) == 7 and all(f"### {cell}" in text for cell in served)
    assert all(f"`{cell}`" in text for cell in set(table[table.status == "skipped"].cell_id))


def test_report_settings_rerun_the_wandb_jobs_and_no_cell(swept: Path) -> None:
    # What the W&B jobs then do online without a key (fall back to offline, warn once, keep their run ids) is
    # tested on the same job command in tests/test_report.py; here: the DAG reruns them, and nothing measured.
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config", f"overrides={E2E_OVERRIDES} report.wandb.mode=online"],
                            cwd=swept, env=project_env(swept), capture_output=True, text=True, timeout=300)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "rule run_cell:" not in output and "rule quantize:" not in output
    assert output.count("rule wandb_cell:") == len(cells(swept)) and "rule wandb_sweep:" in output
