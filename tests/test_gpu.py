"""The GPU check, on any NVIDIA host with Docker and the NVIDIA container runtime: `.venv/bin/pytest -m gpu`.

The upstream CUDA vLLM image (image=vllm_cuda_docker, vllm/vllm-openai at the Spark's vLLM release) pulled and
recorded by id, its torch built for CUDA and seeing the GPU through `--gpus all`; the preflight of the check's cells;
then the embedded model (packaged weights, no hub download for the target) served on the GPU through Snakemake, with
no drafter and with a draft model (Gemma-3-270M's hub weights) at k=2: acceptance scraped from the drafter cell's
server, and its greedy outputs (16 tokens per prompt) identical to the no-drafter cell's.

Without a usable NVIDIA GPU (tests/conftest.py: nvidia-smi, the docker nvidia runtime) these tests are deselected
at collection, never skipped inside a run: CI and CPU hosts report them as deselected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from project import make_project

from specsweep.config.compose import compose_cell
from specsweep.config.grid import expand
from specsweep.docker_engine import image_id
from specsweep.images.base import backend_of, build_image
from specsweep.images.preflight import needs_of, planned_argvs, run_preflight
from specsweep.records.image import CudaDockerDetails, ImageRecord

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

IMAGE = "vllm_cuda_docker"
DRAFTER = "draft_model_gemma3_270m"
# Both cells of the check: the embedded model unquantized on one GPU, without a drafter (the losslessness reference)
# and with the draft model at k=2. float32: the dtype in which drafted and plain greedy outputs stay token-identical
# (conf/model/gemma3_270m.yaml; bf16 verification batches round differently). One bench workload of 16 tokens, greedy
# outputs of 16 tokens per lossless prompt; no endpoint quality or lm-eval (the CPU sweep covers them).
OVERRIDES = [
    f"image={IMAGE}", "serve=gpu", "model=gemma3_270m", "model.dtype=float32", "quant=bf16",
    f"drafter=none,{DRAFTER}", "k=2",
    "bench.runs=1", "bench.workloads=[{name:probe,prompt_file:data/prompts/code_edit.txt,max_tokens:16}]",
    "eval.lossless.max_tokens=16", "eval.endpoint_quality=null", "eval.lm_eval=null", "quality=endpoint_only",
]  # fmt: skip
SWEEP = "results/embedded"
REFERENCE = "gemma3_270m-bf16-none"
DRAFTED = f"gemma3_270m-bf16-{DRAFTER}-k2"


@pytest.fixture(scope="module")
def record() -> ImageRecord:
    return build_image(compose_cell([f"image={IMAGE}"]).cell.image)


def test_the_upstream_cuda_image_is_pulled_and_recorded_by_id(record: ImageRecord) -> None:
    image = compose_cell([f"image={IMAGE}"]).cell.image
    assert record.kind == "cuda_docker" and record.name == IMAGE
    assert record.location == image_id(image.reference) and record.location.startswith("sha256:")
    # The tag's release is the vLLM inside (vllm/vllm-openai:v0.30.0 -> 0.30.0).
    assert record.vllm_version.split("+")[0] == image.reference.rsplit(":v", 1)[1]
    assert any(p.startswith("vllm==") for p in record.packages) and any(p.startswith("torch==") for p in record.packages)
    details = record.details
    assert isinstance(details, CudaDockerDetails) and details.reference == image.reference
    assert details.repo_digests and all(d.startswith(image.reference.split(":")[0] + "@sha256:") for d in details.repo_digests)
    # The probe's torch is a CUDA build ...
    assert details.cuda and details.cuda[0].isdigit()
    # ... and sees this host's GPU through the NVIDIA runtime, with the launcher's --gpus flag.
    seen = subprocess.run(
        ["docker", "run", "--rm", "--gpus", "all", "--entrypoint", "python3", record.location, "-c",
         "import json, torch; print(json.dumps([torch.cuda.is_available(), torch.cuda.device_count()]))"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert seen.returncode == 0, seen.stderr[-3000:]
    available, count = json.loads(seen.stdout.strip().splitlines()[-1])
    assert available and count >= 1


def test_the_preflight_finds_everything_the_check_cells_need(record: ImageRecord) -> None:
    cells = expand(OVERRIDES)
    assert sorted(cell.id for cell in cells) == [REFERENCE, DRAFTED]
    configs = [cell.config for cell in cells]
    kind = backend_of(configs[0].image)
    result = run_preflight(kind, record, needs_of(configs), planned_argvs(configs, [cell.id for cell in cells]))
    assert result.needs.methods == ["draft_model"]
    assert result.problems == [], result.failure()
    assert result.vllm_version == record.vllm_version and result.image_location == record.location


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both cells and the evals table through Snakemake on a throwaway project (image, drafter, preflight, cells)."""
    project = make_project(tmp_path_factory.mktemp("gpu"))
    # The overrides as a config file, as `specsweep run` hands them over (--config would mangle the brackets).
    config = project / "gpu-check.yaml"
    config.write_text(yaml.safe_dump({"overrides": OVERRIDES}))
    # The caller's own environment (a real HF_TOKEN, if any, for the drafter's download), not the CPU tests' fakes.
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", str(config), "--", f"{SWEEP}/evals.csv"],
        cwd=project, env={**os.environ, "SPECSWEEP_ROOT": str(project)}, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return project


def test_the_draft_model_cell_serves_on_the_gpu_losslessly_with_acceptance(swept: Path, record: ImageRecord) -> None:
    for cell in (REFERENCE, DRAFTED):
        bench = json.loads((swept / SWEEP / cell / "bench.json").read_text())
        assert bench["status"] == "ok", (cell, bench.get("error"))
        manifest = json.loads((swept / SWEEP / cell / "manifest.json").read_text())
        # The cell's record names the CUDA image it ran, by the id the image step recorded.
        assert manifest["image_name"] == IMAGE and manifest["image_kind"] == "cuda_docker"
        assert manifest["image_location"] == record.location
        assert manifest["image_details"]["reference"] == record.details.reference
        argv = manifest["server_argv"]
        assert argv[:2] == ["docker", "run"] and argv[argv.index("--gpus") + 1] == "all" and record.location in argv
    # Acceptance scraped from the drafter cell's server: it drafted, and accepted some of it.
    drafted = json.loads((swept / SWEEP / DRAFTED / "bench.json").read_text())
    (workload,) = drafted["workloads"]
    acceptance = workload["row"]["acceptance"]
    assert acceptance is not None and acceptance["drafts"] > 0, workload["row"]
    assert 0 < acceptance["acceptance_rate"] <= 1
    spec = json.loads(argv_value(json.loads((swept / SWEEP / DRAFTED / "manifest.json").read_text())["server_argv"],
                                 "--speculative-config"))  # fmt: skip
    assert spec["method"] == "draft_model" and spec["num_speculative_tokens"] == 2
    # Lossless: the drafter cell's greedy outputs equal the no-drafter cell's, over real tokens (zero compared tokens
    # would be reported as "not compared", not as 100 %).
    evals = pd.read_csv(swept / SWEEP / "evals.csv").set_index("cell_id")
    row = evals.loc[DRAFTED]
    assert row.lossless_reference_cell == REFERENCE, row.lossless_detail
    assert row.lossless_match_pct == 100, row.lossless_detail
    compared = pd.Series([row.lossless_detail]).str.extract(r"identical \((\d+) tokens, (\d+) prompts").iloc[0]
    assert compared.notna().all() and int(compared[0]) > 0 and int(compared[1]) > 0, row.lossless_detail


def argv_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]
