"""A cell whose server dies: the sweep goes on, reports it, exits non-zero naming it, and reruns only it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from project import make_project, snakemake
from specsweep.records.types import FAILURE_RECORD

pytestmark = pytest.mark.slow

GOOD = "gemma3_270m-bf16-none"
BAD = "gemma3_270m-w4a16_rtn-none"
# vLLM's own int4 kernel forced on fp32 activations: on AVX-512 hosts cpu_gemm_wna16 has no Float case, on AVX2
# hosts the op does not exist. Either way the engine dies on the first request, as in the reported crash.
FAULTY_SWEEP = """\
name: faulty
params:
  - quant: bf16
    drafter: none
  - quant: w4a16_rtn
    drafter: none
    image.wna16_kernel: native
    model.dtype: float32
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = make_project(tmp_path_factory.mktemp("faulty"))
    (project / "conf/sweep/faulty.yaml").write_text(FAULTY_SWEEP)
    # Short workloads: this test is about what happens around the failure, not about the figures.
    result = snakemake(project, "--config", "sweep=faulty", "overrides=bench.runs=1", timeout=1800)
    return project, result


def test_the_run_exits_non_zero_naming_the_failed_cell(faulty) -> None:
    project, result = faulty
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "1 of 2 cells failed" in output
    assert re.search(rf"{BAD}: vLLM exited with code -?\d+ during the workloads|{BAD}: all \d+ requests failed", output), output[-3000:]
    assert "cpu_gemm_wna16" in output  # the server's own last words, in the message


def test_the_other_cell_the_table_and_reports_are_in_place(faulty) -> None:
    project, _ = faulty
    sweep = project / "results/faulty"
    table = pd.read_csv(sweep / "table.csv").set_index("cell_id", drop=False)
    good = table.loc[[GOOD]]
    assert (good.status == "ok").all() and (good.tg_tps_mean > 0).all() and (good.n_failed == 0).all()
    bad = table.loc[BAD]
    assert bad.status == "failed" and "cpu_gemm_wna16" in bad.server_log_tail
    assert bad.wna16_kernel_selected == "CPUWNA16LinearKernel" and bad["dtype"] == "float32"
    markdown = (sweep / "tables.md").read_text()
    assert "## Failed cells" in markdown and f"`{BAD}`" in markdown and f"### {GOOD}" in markdown
    assert "Failed cells" in (sweep / "report.html").read_text()
    assert json.loads((sweep / BAD / "wandb.json").read_text())["mode_used"] == "offline"
    # The failed record is kept, but not as the cell's target: no partial record looks complete.
    assert not (sweep / BAD / "bench.json").exists()
    assert json.loads((sweep / BAD / FAILURE_RECORD).read_text())["status"] == "failed"
    assert not (sweep / "status.json").exists()


def test_the_next_run_reruns_only_the_failed_cell(faulty) -> None:
    project, _ = faulty
    result = snakemake(project, "-n", "--config", "sweep=faulty", "overrides=bench.runs=1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    rerun = sorted(set(re.findall(r"rule run_cell:\n(?:    .*\n)*?    wildcards: sweep=faulty, cell=([\w.-]+)", output)))
    assert rerun == [BAD]
    assert "rule quantize:" not in output and "rule build_image:" not in output
