from __future__ import annotations

import sys
from pathlib import Path

import pytest

from project import ProcessSampler, make_project, snakemake_e2e

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded sweep through Snakemake with real vLLM on CPU, once per session (test_e2e, test_report_e2e)."""
    project = make_project(tmp_path_factory.mktemp("e2e"))
    # Outside the project: the secrets test searches every file the run wrote.
    sampler = ProcessSampler(project, project.parent / f"{project.name}-processes.json")
    sampler.start()
    try:
        result = snakemake_e2e(project, timeout=3000)
    finally:
        sampler.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "specsweep: results table at results/embedded/table.csv" in result.stdout + result.stderr
    return project
