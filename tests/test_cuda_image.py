"""image=vllm_cuda_docker without a GPU: the config composes, the server argv is the container launcher's with the GPU
flags and the draft model's speculative config, vLLM's own CLI code accepts it, and the GPU check (tests/test_gpu.py)
is deselected on a host that cannot run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import gpu_unusable
from project import server_command

from specsweep.config.compose import ConfigError, compose_cell
from specsweep.config.schema import CudaDockerImage
from specsweep.images.base import BACKENDS, LaunchSpec, backend_of
from specsweep.records.image import CudaDockerDetails, ImageRecord

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "src/specsweep/serve/vllm_cli_probe.py"
CELL = ["image=vllm_cuda_docker", "serve=gpu", "model.dtype=float32", "quant=bf16", "drafter=draft_model_gemma3_270m", "k=2"]


def test_the_cuda_image_config_composes_and_has_a_kind() -> None:
    image = compose_cell(["image=vllm_cuda_docker"]).cell.image
    assert isinstance(image, CudaDockerImage) and image.reference == "vllm/vllm-openai:v0.30.0"
    assert type(backend_of(image)) is BACKENDS["cuda_docker"]
    run = image.container
    assert run.gpus == "all" and run.ipc_host and not run.privileged and image.serve_command == ["vllm", "serve"]
    # The draft model may be served: the image fetches hub drafters (an offline image records such cells as skipped).
    assert not image.offline
    assert backend_of(image).preview().location == "<id of vllm/vllm-openai:v0.30.0>"


def test_the_draft_model_is_for_the_embedded_model_only() -> None:
    drafter = compose_cell(CELL).cell.drafter
    assert (drafter.kind, drafter.for_model, drafter.model) == ("draft_model", "gemma3_270m", "unsloth/gemma-3-270m")
    with pytest.raises(ConfigError, match="drafts for model gemma3_270m"):
        compose_cell([*CELL, "model=gemma4_31b_it"])


def test_a_cuda_record_keeps_its_details_through_json() -> None:
    details = CudaDockerDetails(reference="vllm/vllm-openai:v0.30.0", repo_digests=["vllm/vllm-openai@sha256:" + "a" * 64],
                                python="3.12.3", torch="2.13.0+cu129", cuda="12.9")  # fmt: skip
    record = backend_of(compose_cell(["image=vllm_cuda_docker"]).cell.image).preview().model_copy(update={"details": details})
    assert ImageRecord.model_validate_json(record.model_dump_json()).details == details


def launch_argv(tmp_path: Path) -> tuple[list[str], str, str]:
    cell = compose_cell(CELL).cell
    model, drafter = tmp_path / "model", tmp_path / "hf/hub/models--unsloth--gemma-3-270m/snapshots/abc"
    model.mkdir()
    drafter.mkdir(parents=True)
    kind = backend_of(cell.image)
    spec = LaunchSpec(cell=cell, model_location=str(model), port=8000, name="c", dtype=None, env={}, labels={},
                      drafter_location=str(drafter))  # fmt: skip
    return kind.server_command(kind.preview(), spec).argv, str(model), str(drafter)


def test_the_server_argv_runs_vllm_serve_on_all_gpus_with_the_draft_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    argv, model, drafter = launch_argv(tmp_path)
    image_at = argv.index("<id of vllm/vllm-openai:v0.30.0>")
    assert argv[:2] == ["docker", "run"] and argv[argv.index("--gpus") + 1] == "all"
    assert "--ipc=host" in argv and "--privileged" not in argv and "--ulimit" not in argv
    assert argv[image_at + 1 : image_at + 4] == ["vllm", "serve", model] and f"{model}:{model}:ro" in argv
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    # The prepared snapshot, seen through the HF_HOME mount.
    assert spec == {"method": "draft_model", "model": drafter, "num_speculative_tokens": 2}
    assert argv[argv.index("--dtype") + 1] == "float32" and argv[argv.index("--gpu-memory-utilization") + 1] == "0.3"
    # Without a prepared snapshot (`specsweep config`): the hub id.
    hub = server_command(compose_cell(CELL).cell, model, 8000).argv
    assert json.loads(hub[hub.index("--speculative-config") + 1])["model"] == "unsloth/gemma-3-270m"


@pytest.mark.slow
def test_vllms_own_parser_accepts_the_cuda_argv(tmp_path: Path, monkeypatch, parse) -> None:
    """What follows `vllm serve` in the container, through vLLM's CLI code (the CPU vLLM env's: same CLI)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    argv, model, _ = launch_argv(tmp_path)
    args = argv[argv.index("serve", argv.index("<id of vllm/vllm-openai:v0.30.0>")) + 1 :]
    (result,) = parse([args])
    assert result["ok"], result["error"]
    spec = result["args"]["speculative_config"]
    assert spec["method"] == "draft_model" and spec["num_speculative_tokens"] == 2
    assert result["args"]["gpu_memory_utilization"] == 0.3 and result["args"]["dtype"] == "float32"


def test_the_gpu_check_is_deselected_where_no_gpu_can_run_it() -> None:
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = collected.stdout + collected.stderr
    why = gpu_unusable()
    if why is None:  # an NVIDIA host with the runtime: `pytest -m gpu` runs them
        assert collected.returncode == 0 and "gpu tests: run" in out and "deselected" not in out, out[-3000:]
        return
    # Deselected (pytest's own count), not collected-then-skipped; the header says why. No test left: exit 5.
    assert collected.returncode == 5, out[-3000:]
    assert f"gpu tests: deselected: {why}" in out
    assert "3 deselected" in out and "skipped" not in out, out[-3000:]
