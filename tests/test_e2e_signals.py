"""Signals during a cell, with real vLLM: nothing keeps running, no lock stays behind, leftovers are reaped.

Ctrl-C of `specsweep run` is tested on the container path (tests/test_e2e_docker.py), where it must also stop and
remove the container: the same signal handling, with more to tear down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from project import cell_processes, make_project, project_env, snakemake

pytestmark = pytest.mark.slow

# One cell with a one-request workload: these tests are about what happens around the server, not its figures.
ONE_CELL = ["quant=bf16", "drafter=none", "eval=none", "bench.runs=1",
            "bench.workloads=[{name:probe,prompt_file:data/prompts/free_text.txt,max_tokens:8}]"]  # fmt: skip
CELL = "results/embedded/gemma3_270m-bf16-none"


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, runner: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert runner is None or runner.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def start(project: Path, argv: list[str]) -> subprocess.Popen:
    """Like a terminal's foreground job: its own process group, SIGINT at its default (a shell's background job
    inherits it ignored)."""
    return subprocess.Popen(
        argv, cwd=project, env=project_env(project), start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def snakemake_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--config", f"overrides={' '.join(ONE_CELL)}", *extra]


def serving(project: Path) -> bool:
    """A cell's server is up and answering (its log says so), not merely started."""
    log = project / CELL / "server.log"
    return bool(cell_processes(project)) and log.is_file() and "Application startup complete" in log.read_text()


def finish(runner: subprocess.Popen, timeout_s: float = 300) -> str:
    try:
        output, _ = runner.communicate(timeout=timeout_s)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    return output


def lock_files(project: Path) -> list[Path]:
    return list((project / ".snakemake/locks").glob("*"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("signals"))


def test_sigterm_of_snakemake_finishes_the_running_cell_then_stops(project: Path) -> None:
    runner = start(project, snakemake_argv())
    wait_for(lambda: serving(project), 600, "vLLM to serve", runner)
    runner.send_signal(signal.SIGTERM)  # Snakemake's graceful stop: running jobs finish, no new ones start
    output = finish(runner, 600)
    assert "Will exit after finishing currently running jobs" in output, output[-3000:]
    assert cell_processes(project) == []
    assert lock_files(project) == []
    assert not (project / "results/embedded/table.csv").exists()  # nothing after the running cell started


def test_sigkill_of_snakemake_takes_its_job_and_server_down_and_the_next_run_clears_the_lock(project: Path) -> None:
    (project / CELL / "bench.json").unlink(missing_ok=True)
    runner = start(project, snakemake_argv())
    wait_for(lambda: serving(project), 600, "vLLM to serve", runner)
    runner.kill()  # the main Snakemake process alone: its cell job notices and stops its server
    finish(runner, 60)
    wait_for(lambda: not cell_processes(project), 90, "the server to exit")
    assert not (project / CELL / "bench.json").exists()
    assert lock_files(project), "a SIGKILLed Snakemake leaves its lock"
    # The next run (a real, locking one; its only target is already built) removes the stale lock and goes on.
    # (A server that ignores the SIGTERM is reaped by the next run too: tests/test_reaper.py.)
    receipt = next((project / "results/_images").glob("*.json")).relative_to(project)
    result = snakemake(project, "--config", f"overrides={' '.join(ONE_CELL)}", "--", str(receipt))
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "removed Snakemake's lock" in output, output[-3000:]
