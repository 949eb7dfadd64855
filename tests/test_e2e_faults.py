"""Cells whose server dies (a crash on the first request; SIGKILL mid-workload): the sweep goes on, reports them,
exits non-zero naming them, and reruns only them."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pandas as pd
import psutil
import pytest
from project import make_project, snakemake, when_measuring

from specsweep.records.cell import FAILURE_RECORD

pytestmark = pytest.mark.slow

GOOD = "gemma3_270m-bf16-none"
BAD = "gemma3_270m-w4a16_rtn-none"
KILLED = "gemma3_270m-bf16-ngram-k2"
# One request per workload after the warmup: this test is about what happens around failures, not figures.
OVERRIDES = "eval=none bench.runs=1 bench.workloads=[{name:probe,prompt_file:data/prompts/free_text.txt,max_tokens:64}]"
# vLLM's own int4 kernel forced on fp32 activations: on AVX-512 hosts cpu_gemm_wna16 has no Float case, on AVX2
# hosts the op does not exist. Either way the engine dies on the first request, as in the reported crash.
FAULTY_SWEEP = """\
name: faulty
params:
  - quant: bf16
    drafter: none,ngram
    k: "2"
  - quant: w4a16_rtn
    drafter: none
    image.wna16_kernel: native
    model.dtype: float32
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = make_project(tmp_path_factory.mktemp("faulty"))
    (project / "conf/sweep/faulty.yaml").write_text(FAULTY_SWEEP)
    # SIGKILL the cell's vLLM while a measured request streams.
    killer = threading.Thread(target=when_measuring, args=(project / "results/faulty" / KILLED, psutil.Process.kill),
                              daemon=True)  # fmt: skip
    killer.start()
    result = snakemake(project, "--config", "sweep=faulty", f"overrides={OVERRIDES}", timeout=1800)
    killer.join(timeout=5)
    return project, result


def test_the_run_exits_non_zero_naming_the_failed_cell(faulty) -> None:
    project, result = faulty
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "2 of 3 cells failed" in output
    assert re.search(rf"{BAD}: vLLM exited during the workloads \((exit -?\d+|killed by SIG[A-Z]+ \(exit -?\d+\))|{BAD}: all \d+ requests failed", output), output[-3000:]
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
    result = snakemake(project, "-n", "--config", "sweep=faulty", f"overrides={OVERRIDES}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    rerun = sorted(set(re.findall(r"rule run_cell:\n(?:    .*\n)*?    wildcards: sweep=faulty, cell=([\w.-]+)", output)))
    assert rerun == sorted([BAD, KILLED])
    assert "rule quantize:" not in output and "rule build_image:" not in output


def test_a_server_killed_mid_workload_fails_its_cell_with_the_log(faulty) -> None:
    project, result = faulty
    output = result.stdout + result.stderr
    assert re.search(rf"{KILLED}: vLLM exited during the workloads \(killed by SIGKILL \(exit -9\): Killed", output), output[-3000:]
    sweep = project / "results/faulty"
    record = json.loads((sweep / KILLED / FAILURE_RECORD).read_text())
    assert record["status"] == "failed" and "killed by SIGKILL (exit -9)" in record["error"]
    log_lines = (sweep / KILLED / "server.log").read_text(errors="replace").splitlines()
    assert record["server_log_tail"] == log_lines[-50:]
    assert not (sweep / KILLED / "bench.json").exists()
    table = pd.read_csv(sweep / "table.csv")
    assert list(table[table.cell_id == KILLED].status) == ["failed"]
