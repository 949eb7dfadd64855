"""A throwaway copy of the project's workflow files, so tests never touch the checkout's results/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

from specsweep.cell import CELL_MARKER_ENV

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "conf", "workflow", "profiles", "data", "spark", "spark-cluster", "slurm"]
# The end-to-end sweep the tests share: README command 1's sweep with one run per workload instead of two, greedy
# losslessness outputs of 16 tokens instead of 64 and lm-eval on the first 24 of its 95 questions (test-sized: every
# property is still checked, in about half the measuring time). Every Snakemake call on that project passes it, or
# the changed config would rerun the cells. The servers get HF_TOKEN (forwarded by name).
E2E_OVERRIDES = "bench.runs=1 eval.lossless.max_tokens=16 eval.lm_eval.limit=24 serve.forward_env=[HF_TOKEN]"
# Every test run of the workflow has these fake credentials in its environment, as a user's shell would; none
# may appear in any output or command line (test_e2e_secrets).
FAKE_SECRETS = {
    "HF_TOKEN": "hf_specsweepFakeToken" + "A1b2C3d4" * 3,
    "WANDB_API_KEY": "5ec12e7f" * 5,
    "OPENAI_API_KEY": "sk-specsweep-fake-" + "Zz9" * 8,
}


def make_project(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_symlink():
            os.symlink(os.readlink(source), where / name)
        elif source.is_dir():
            shutil.copytree(source, where / name)
        else:
            shutil.copy2(source, where / name)
    return where


def project_env(project: Path) -> dict[str, str]:
    return {**os.environ, **FAKE_SECRETS, "SPECSWEEP_ROOT": str(project)}


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


def when_measuring(cell_dir: Path, act: Callable[[psutil.Process], None], poll_s: float = 0.2,
                   timeout_s: float = 1500) -> None:
    """Apply `act` to every process of the cell's server once a measured request streams (the warmup is the
    server log's first completion; uvicorn logs the second as its response starts)."""
    deadline = time.monotonic() + timeout_s
    log = cell_dir / "server.log"
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text(errors="replace").count("POST /v1/completions") >= 2:
            for process in cell_processes(cell_dir):
                act(process)
            return
        time.sleep(poll_s)


class ProcessSampler(threading.Thread):
    """Samples every command line on the machine (what `ps -eo args` shows anyone) while a run goes on, and which
    secret variables the cell servers under `project` hold (names only)."""

    def __init__(self, project: Path, out: Path, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.project, self.out, self.every_s = project, out, every_s
        self.stopped = threading.Event()
        self.command_lines: set[str] = set()
        self.server_secrets: set[tuple[str, ...]] = set()

    def run(self) -> None:
        while not self.stopped.is_set():
            listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
            self.command_lines.update(listing.splitlines()[1:])
            for process in cell_processes(self.project):
                try:
                    held = tuple(sorted(name for name in FAKE_SECRETS if name in process.environ()))
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                self.server_secrets.add(held)
            self.stopped.wait(self.every_s)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        payload = {"command_lines": sorted(self.command_lines), "server_secrets": sorted(self.server_secrets)}
        self.out.write_text(json.dumps(payload, indent=1))


def snakemake_e2e(project: Path, *args: str, overrides: str = "", timeout: float = 1800) -> subprocess.CompletedProcess:
    """Snakemake on the shared end-to-end sweep's project, with its overrides (plus any given)."""
    return snakemake(project, *args, "--config", f"overrides={E2E_OVERRIDES} {overrides}".strip(), timeout=timeout)


def snakemake(project: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def server_command(cell, model_location: str, port: int, image_root: Path | None = None, container_name: str = "c",
                   dtype: str | None = None, env: dict | None = None, labels: dict | None = None):  # fmt: skip
    """The server command the cell's image kind makes, from a record of what the image would be (or `image_root`
    for a venv built at a given place)."""
    from specsweep.images.base import LaunchSpec, backend_of

    kind = backend_of(cell.image)
    record = kind.preview()
    if image_root is not None:
        record = record.model_copy(update={"location": str(image_root)})
    spec = LaunchSpec(cell=cell, model_location=model_location, port=port, name=container_name, dtype=dtype,
                      env=env or {}, labels=labels or {})  # fmt: skip
    return kind.server_command(record, spec)


def job_config(where: Path, kind: str, *overrides: str) -> str:
    """A stage job's config as the workflow plan resolves it (specsweep.config.jobs), written under `where`: what
    Snakemake hands a job, for tests that run one job by hand."""
    from specsweep.config.compose import compose_cell
    from specsweep.config.jobs import DrafterJob, ImageJob, ModelJob, QualityJob, QuantJob, job_text

    composed = compose_cell(list(overrides))
    cfg = composed.cell
    job = {
        "model": lambda: ModelJob(model=cfg.model),
        "drafter": lambda: DrafterJob(drafter=cfg.drafter),
        "image": lambda: ImageJob(image=cfg.image),
        "quant": lambda: QuantJob(model=cfg.model, quant=cfg.quant),
        "quality": lambda: QualityJob(model=cfg.model, quant=cfg.quant, quality=composed.quality),
    }[kind]()
    path = Path(where) / f"{kind}-{abs(hash(overrides))}.job.json"
    path.write_text(job_text(job))
    return str(path)

