"""End to end on CPU: the embedded sweep through Snakemake with real vLLM serving the packaged model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from project import make_project, project_env, snakemake
from specsweep.cell import CELL_MARKER_ENV

pytestmark = pytest.mark.slow

SWEEP_CELLS = ["gemma3_270m-bf16-ngram-k2", "gemma3_270m-bf16-ngram-k4", "gemma3_270m-bf16-none"]


def cell_processes(under: Path) -> list[psutil.Process]:
    """Processes (vLLM API server, engine core, workers) started for a cell under `under`."""
    found = []
    for process in psutil.process_iter():
        try:
            marker = process.environ().get(CELL_MARKER_ENV, "")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if marker.startswith(str(under)):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def table(swept: Path) -> pd.DataFrame:
    return pd.read_csv(swept / "results/embedded/table.csv")


def bench(project: Path, cell: str) -> dict:
    return json.loads((project / "results/embedded" / cell / "bench.json").read_text())


def test_every_cell_wrote_its_records(swept: Path) -> None:
    for cell in SWEEP_CELLS:
        cell_dir = swept / "results/embedded" / cell
        for name in ("bench.json", "manifest.json", "config.yaml", "server.log"):
            assert (cell_dir / name).is_file(), cell_dir / name
        assert "Starting vLLM" in (cell_dir / "server.log").read_text() or "vLLM" in (
            cell_dir / "server.log"
        ).read_text()
    assert (swept / "results/embedded/table.parquet").is_file()


def test_ngram_cells_draft_and_accept(table: pd.DataFrame) -> None:
    ngram = table[table.drafter == "ngram"]
    assert set(ngram.k) == {2, 4}
    assert (ngram.drafts > 0).all()
    assert ((ngram.acceptance_rate > 0) & (ngram.acceptance_rate <= 1)).all()
    assert (ngram.mean_acceptance_length >= 1).all()
    assert (ngram.status == "ok").all()
    k4 = ngram[ngram.k == 4]
    for position in range(1, 5):
        assert k4[f"acceptance_pos_{position}"].between(0, 1).all()
    # ngram at k=2 never drafts a third token.
    k2 = ngram[ngram.k == 2]
    assert k2["acceptance_pos_3"].isna().all() or (k2["acceptance_pos_3"] == 0).all()


def test_none_cells_draft_nothing(table: pd.DataFrame) -> None:
    none = table[table.drafter == "none"]
    assert len(none) == 3  # code_edit at c1 and c2, free_text at c1: not repeated per k
    assert (none.drafts == 0).all() and none.acceptance_rate.isna().all() and none.k.isna().all()


def test_tokens_counted_from_token_ids_and_rates_present(table: pd.DataFrame) -> None:
    assert (table.token_source == "token_ids").all()
    assert (table.n_failed == 0).all()
    assert (table.tg_tps_mean > 0).all() and (table.pp_tps_mean > 0).all() and (table.ttfr_ms_mean > 0).all()
    concurrent = table[table.concurrency == 2]
    assert len(concurrent) == 3 and (concurrent.n_requests == 4).all()
    assert table.vllm_version.str.startswith("0.32").all()
    assert table.git_sha.isna().all() or table.git_sha.str.len().eq(40).all()


def test_greedy_outputs_identical_with_and_without_drafter(swept: Path) -> None:
    def outputs(cell: str) -> dict[str, list[list[int]]]:
        # Sequential requests only: a batch of two may round differently from a batch of one.
        workloads = bench(swept, cell)["workloads"]
        return {w["workload"]: [r["token_ids"] for r in w["requests"]] for w in workloads if w["concurrency"] == 1}

    plain = outputs("gemma3_270m-bf16-none")
    for cell in ("gemma3_270m-bf16-ngram-k2", "gemma3_270m-bf16-ngram-k4"):
        drafted = outputs(cell)
        assert drafted.keys() == plain.keys()
        for workload in plain:
            assert drafted[workload] == plain[workload], f"{cell} {workload} differs from no-drafter output"


def test_manifest_records_what_produced_the_numbers(swept: Path) -> None:
    manifest = json.loads((swept / "results/embedded/gemma3_270m-bf16-ngram-k4/manifest.json").read_text())
    assert manifest["vllm_version"].startswith("0.32")
    assert len(manifest["model_source_sha256"]) == 64
    assert all(len(digest) == 64 for digest in manifest["model_weights_sha256"].values())
    argv = manifest["server_argv"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert json.loads(argv[argv.index("--speculative-config") + 1])["num_speculative_tokens"] == 4


def test_no_server_outlives_the_sweep(swept: Path) -> None:
    assert cell_processes(swept) == []


def test_noop_rerun_does_nothing(swept: Path) -> None:
    result = snakemake(swept, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_editing_one_drafter_reruns_only_its_cells(swept: Path, tmp_path: Path) -> None:
    drafter_yaml = swept / "conf/drafter/ngram.yaml"
    original = drafter_yaml.read_text()
    try:
        drafter_yaml.write_text(original.replace("prompt_lookup_max: 4", "prompt_lookup_max: 3"))
        result = snakemake(swept, "-n")
    finally:
        drafter_yaml.write_text(original)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Only cell jobs: the report jobs downstream of the table rerun for every cell, as they should.
    rerun_cells = sorted(set(re.findall(r"rule run_cell:\n(?:    .*\n)*?    wildcards: sweep=embedded, cell=([\w.-]+)", output)))
    assert rerun_cells == ["gemma3_270m-bf16-ngram-k2", "gemma3_270m-bf16-ngram-k4"]
    assert "rule prepare_model:" not in output and "rule build_image:" not in output


def test_ctrl_c_during_a_cell_leaves_no_vllm_process(tmp_path: Path) -> None:
    project = make_project(tmp_path / "interrupted")
    command = [sys.executable, "-m", "snakemake", "--config", "overrides=drafter=none"]
    # Own process group, like a terminal's foreground job: Ctrl-C signals the whole group.
    runner = subprocess.Popen(
        command, cwd=project, env=project_env(project), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not cell_processes(project):
            assert runner.poll() is None, "snakemake ended before vLLM started"
            assert time.monotonic() < deadline, "vLLM never started"
            time.sleep(1)
        time.sleep(5)  # let vLLM spawn its engine core too
        os.killpg(runner.pid, signal.SIGINT)
        runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while cell_processes(project) and time.monotonic() < deadline:
        time.sleep(1)
    assert cell_processes(project) == []
    assert not (project / "results/embedded/gemma3_270m-bf16-none/bench.json").exists()
