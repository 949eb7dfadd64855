"""A throwaway copy of the project's workflow files, so tests never touch the checkout's results/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "conf", "workflow", "profiles", "data", "spark"]
# The end-to-end sweep the tests share: README command 1's sweep with one run per workload instead of two
# (test-sized: every property is still checked, in about half the measuring time). Every Snakemake call on that
# project passes it, or the changed config would rerun the cells.
E2E_OVERRIDES = "bench.runs=1"


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
    return {**os.environ, "SPECSWEEP_ROOT": str(project)}


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
