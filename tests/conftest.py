from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chromium import in_ci
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


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine for the container tests: the running one, or dockerd started the way CI starts it.

    Without one these tests skip on a developer machine and fail in CI (CI=true), where .ci/run installs docker.io
    and debootstrap so that they always run."""
    from specsweep.images.engine import EngineError, start_engine

    try:
        start_engine()
    except EngineError as err:
        if in_ci():
            pytest.fail(f"no Docker engine in CI: {err}")
        pytest.skip(f"no Docker engine: {err}")
