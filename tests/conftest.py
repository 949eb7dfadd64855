from __future__ import annotations

import functools
import json
import os
import re
import subprocess
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
    output = result.stdout + result.stderr
    assert "specsweep: results table at results/embedded/table.csv" in output
    # The console shows the cells as they go (specsweep.cell_progress), 9 of them, beside Snakemake's lines.
    assert "specsweep: cell 1 of 9 starting: gemma3_270m-" in output and "localrule run_cell:" in output
    assert re.search(r"^specsweep: cell 9 of 9 done in [\d.]+ (s|min): gemma3_270m-\S+ (ok, tg|skipped)", output, re.M)
    return project


@pytest.fixture(scope="session")
def parse():
    """vLLM's own `vllm serve` parser (src/specsweep/serve/vllm_cli_probe.py) in one probe process for the whole test
    run: importing vLLM is most of a parse's cost. parse([argv, ...]) -> [{"ok", "error", "args"}, ...]."""
    from specsweep.config.compose import compose_cell
    from specsweep.images.base import build_image

    python = Path(build_image(compose_cell([]).cell.image).location) / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    probe = subprocess.Popen([str(python), str(ROOT / "src/specsweep/serve/vllm_cli_probe.py"), "--lines"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def run(argvs: list[list[str]]) -> list[dict]:
        probe.stdin.write(json.dumps(argvs) + "\n")
        probe.stdin.flush()
        line = probe.stdout.readline()
        assert line, probe.stderr.read()[-3000:]
        return json.loads(line)

    yield run
    probe.stdin.close()
    probe.wait(timeout=60)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine for the container tests: the running one, or dockerd started the way CI starts it.

    Without one these tests skip on a developer machine and fail in CI (CI=true), where .ci/run installs docker.io
    and debootstrap so that they always run."""
    from specsweep.docker_engine import EngineError, start_engine

    try:
        start_engine()
    except EngineError as err:
        if in_ci():
            pytest.fail(f"no Docker engine in CI: {err}")
        pytest.skip(f"no Docker engine: {err}")


# ---------------------------------------------------------------- the GPU check (tests/test_gpu.py)
# `pytest -m gpu` runs it on an NVIDIA host with Docker and the NVIDIA container runtime. Elsewhere (CI, CPU hosts)
# the gpu-marked tests are deselected at collection and reported as such, never skipped inside the run; the header
# says why.


@functools.cache
def gpu_unusable() -> str | None:
    """Why this host cannot run the gpu-marked tests, or None when it can."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "nvidia-smi not found (no NVIDIA driver on this host)"
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"`nvidia-smi -L` failed ({err})"
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return f"`nvidia-smi -L` lists no GPU ({(listed.stderr or listed.stdout).strip()[-200:] or listed.returncode})"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "the docker CLI is not installed"
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"`docker info` failed ({err})"
    if info.returncode != 0:
        return f"`docker info` failed: {info.stderr.strip()[-200:]}"
    runtimes = next((line for line in info.stdout.splitlines() if line.strip().startswith("Runtimes:")), "")
    if "nvidia" not in runtimes:
        return ("Docker has no nvidia runtime (install the NVIDIA Container Toolkit, then `nvidia-ctk runtime configure "
                f"--runtime=docker` and restart docker; `docker info` shows {runtimes.strip() or 'no Runtimes line'})")
    return None


def pytest_report_header(config: pytest.Config) -> str:
    why = gpu_unusable()
    return "gpu tests: " + ("run (nvidia-smi lists a GPU; Docker has the nvidia runtime)" if why is None else
                            f"deselected: {why}")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu or gpu_unusable() is None:
        return
    config.hook.pytest_deselected(items=gpu)
    items[:] = [item for item in items if not item.get_closest_marker("gpu")]
