"""The Snakemake DAG without running jobs: dry-runs, profiles, lint, and config errors before any job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from project import make_project, project_env, snakemake

from specsweep.config.compose import ConfigError
from specsweep.config.grid import expand

# Each starts Snakemake in a subprocess (2-5 s, most of it Snakemake's own start and DAG): CI runs them all; the fast
# loop (`pytest -m "not slow"`) checks the same plans in process through plan_sweep().
STARTS_SNAKEMAKE = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


def planned_cells(output: str) -> list[str]:
    return sorted(set(re.findall(r"results/[\w.-]+/([\w.-]+)/bench\.json", output)))


def assert_plans_the_recorded_jobs(output: str, profile: str) -> None:
    """Every job of the dry run (rule and outputs, config keys masked) is the one recorded in
    tests/data/planned_jobs/<profile>.txt, written from the dry runs of 22bd53a, before the CLI split: a refactor
    must plan the same DAG. A deliberate change of the DAG rewrites the file, in the same commit, from this
    function's output."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", output):
        if rule := re.match(r"(?:local)?rule (\w+):\n", block):
            outputs = re.search(r"^\s+output: (.*)$", block, re.M)
            jobs.append(re.sub(r"[0-9a-f]{10,}", "<key>", f"{rule.group(1)}: {outputs.group(1) if outputs else ''}"))
    recorded = (Path(__file__).parent / "data/planned_jobs" / f"{profile}.txt").read_text().splitlines()
    assert sorted(jobs) == recorded


@STARTS_SNAKEMAKE
def test_default_dry_run_plans_the_embedded_sweep(project: Path) -> None:
    result = snakemake(project, "-n")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "workflow specific profile profiles/default" in output
    assert_plans_the_recorded_jobs(output, "default")
    assert planned_cells(output) == [
        "gemma3_270m-bf16-ngram-k2",
        "gemma3_270m-bf16-ngram-k4",
        "gemma3_270m-bf16-none",
        "gemma3_270m-int4_autoround_fast-ngram-k4",
        "gemma3_270m-int4_autoround_fast-none",
        "gemma3_270m-nvfp4a16-ngram-k4",
        "gemma3_270m-nvfp4a16-none",
        "gemma3_270m-w4a16_gptq-ngram-k4",
        "gemma3_270m-w4a16_gptq-none",
    ]
    for rule in ("prepare_model", "build_image", "quantize", "quant_quality", "run_cell", "aggregate"):
        assert f"rule {rule}:" in output
    # One quantize and one quality job per quant, however many cells use it.
    assert len(re.findall(r"rule quantize:", output)) == 4
    assert len(re.findall(r"rule quant_quality:", output)) == 4


@STARTS_SNAKEMAKE
def test_spark_profile_dry_run_from_the_repo_root(project: Path) -> None:
    result = snakemake(project, "--profile", "spark", "-n")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Using profiles spark" in output
    assert_plans_the_recorded_jobs(output, "spark")
    cells = planned_cells(output)
    assert len(cells) == 1 + 4 * 7 and "gemma4_31b_it-bf16-none" in cells and "gemma4_31b_it-ebircak_nvfp4a16_gptq-gemma_mtp-k7" in cells
    assert "gemma4_31b_it-intel_int4_autoround-dflash-k15" in cells
    assert "results/spark/table.csv" in output
    # The project's own quants are made inside the Spark image, after it is built; the hub quants are downloaded.
    quantize_jobs = [block.split("log:")[0] for block in output.split("rule quantize:")[1:]]
    made_in_image = {re.search(r"_quants/gemma4_31b_it-(\w+?)-[0-9a-f]{10}\.json", job).group(1)
                     for job in quantize_jobs if "results/_images/spark_vllm_docker-" in job}  # fmt: skip
    assert len(quantize_jobs) == 5 and made_in_image == {"nvfp4a16_gptq", "int4_autoround"}


@STARTS_SNAKEMAKE
def test_spark_profile_plans_the_26b_a4b_sweep(project: Path) -> None:
    result = snakemake(project, "--profile", "spark", "-n", "--config", "sweep=spark_26b")
    assert result.returncode == 0, result.stderr
    cells = planned_cells(result.stdout + result.stderr)
    # base and NVIDIA's NVFP4 × (no drafter + MTP at k = 1, 2, 3, 4, 7), and NVFP4 + MTP verified adaptively at k 4, 7
    assert len(cells) == 2 * 6 + 2 and "gemma4_26b_a4b_it-nvidia_nvfp4_26b_a4b-gemma_mtp_26b_a4b-k2" in cells
    assert "gemma4_26b_a4b_it-nvidia_nvfp4_26b_a4b-gemma_mtp_26b_a4b-k4" in cells
    assert "gemma4_26b_a4b_it-nvidia_nvfp4_26b_a4b-gemma_mtp_26b_a4b-k4-adaptive" in cells
    assert "results/spark_26b/table.csv" in result.stdout + result.stderr


@STARTS_SNAKEMAKE
def test_overrides_narrow_the_sweep(project: Path) -> None:
    result = snakemake(project, "-n", "--config", "overrides=quant=bf16 drafter=ngram k=2,4")
    assert result.returncode == 0, result.stderr
    assert planned_cells(result.stdout + result.stderr) == ["gemma3_270m-bf16-ngram-k2", "gemma3_270m-bf16-ngram-k4"]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("drafter=gemma_mpt", "Available options in 'drafter'"),
        ("k=0", "greater than or equal to 1"),
        ("k=-1", "greater than or equal to 1"),
        ("bogus=1", "unknown key 'bogus'"),
        ("quant=w4a16_gptq quant.scheme=W3A16", "Input should be 'W4A16'"),
        ("quant=w4a16_gptq quant.calibration.path=data/calibration/missing.txt", "calibration file"),
        ("quant=w4a16_gptq quant.calibration=null", "GPTQ needs calibration data"),
        ("quant=nvfp4a16_gptq quant.group_size=64", "has a fixed grouping"),
        ("quant=intel_int4_autoround", "pick model=gemma4_31b_it"),
    ],
)
def test_bad_overrides_and_recipes_are_refused_by_the_plan(override: str, needle: str) -> None:
    """The Snakefile plans the sweep with plan_sweep() before any rule exists, and turns its ConfigError into a stop
    before any job (that path runs through Snakemake in tests/test_bad_input.py); each bad input is checked here, in
    process, where it costs a Hydra compose instead of a Snakemake start."""
    from specsweep.workflow_plan import plan_sweep

    with pytest.raises(ConfigError) as refused:
        plan_sweep(override)
    assert needle in str(refused.value)


@STARTS_SNAKEMAKE
def test_lint_has_no_errors(project: Path) -> None:
    result = snakemake(project, "--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output


@STARTS_SNAKEMAKE
def test_specsweep_run_targets_only_the_chosen_cell(project: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "run", "quant=bf16", "drafter=ngram", "k=3", "--snakemake-args=-n"],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert planned_cells(output) == ["gemma3_270m-bf16-ngram-k3"]
    assert "rule aggregate:" not in output


@STARTS_SNAKEMAKE
def test_specsweep_run_passes_overrides_with_brackets_quotes_and_spaces_verbatim(project: Path) -> None:
    workloads = "bench.workloads=[{name:probe,prompt_file:data/prompts/free_text.txt,max_tokens:8}]"
    result = subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "run", "quant=bf16", "drafter=none", workloads,
         "model.served_name='a b'", "--snakemake-args=-n"],
        cwd=project, env=project_env(project), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert planned_cells(output) == ["gemma3_270m-bf16-none"]  # was "No closing quotation" through --config


def test_specsweep_config_prints_cell_and_argv() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "config", "drafter=ngram", "k=7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "# cell gemma3_270m-bf16-ngram-k7" in result.stdout
    assert '"method":"ngram"' in result.stdout and '"num_speculative_tokens":7' in result.stdout
    assert "vllm.entrypoints.openai.api_server" in result.stdout


def test_specsweep_config_prints_the_spark_docker_argv() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "config", "sweep=spark", "drafter=gemma_mtp", "k=7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "# cell gemma4_31b_it-bf16-gemma_mtp-k7" in result.stdout
    assert """--speculative-config '{"method":"mtp","model":"google/gemma-4-31B-it-assistant","num_speculative_tokens":7}'""" in result.stdout
    assert "docker run --name specsweep-gemma4_31b_it-bf16-gemma_mtp-k7 --privileged" in result.stdout
    assert "--gpus all --rm --network host --entrypoint=" in result.stdout


@STARTS_SNAKEMAKE
def test_spark_cluster_profile_plans_the_users_sweep_on_two_nodes(project: Path) -> None:
    # The README's command, with documentation-range addresses for the two nodes.
    result = snakemake(project, "--profile", "spark-cluster", "-n", "--config",
                       "overrides=image.container.cluster.nodes=[192.0.2.10,192.0.2.11]")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Using profiles spark-cluster" in output
    assert_plans_the_recorded_jobs(output, "spark-cluster")
    cells = planned_cells(output)
    assert len(cells) == 29 and "gemma4_31b_it-nvfp4a16_gptq-dflash-k15" in cells
    assert "results/spark_cluster/table.csv" in output
    # Without the nodes the plan stops before any job, saying what to set.
    with pytest.raises(ConfigError, match=re.escape('--config overrides="image.container.cluster.nodes=[IP1,IP2]"')):
        expand([], "spark_cluster")


@STARTS_SNAKEMAKE
def test_slurm_profile_plans_gpu_jobs_through_the_slurm_executor(project: Path) -> None:
    result = snakemake(project, "--profile", "slurm", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Using profiles slurm" in output
    assert_plans_the_recorded_jobs(output, "slurm")
    assert len(planned_cells(output)) == 29
    # Every GPU job asks Slurm for one GPU, and none is held back by the one-server-per-machine limit.
    gpu_jobs = re.findall(r"resources: .*model_server=0, gpu=1, cpus_per_gpu=\d+", output)
    assert len(gpu_jobs) == 29 + 5 + 5  # cells, quantize and quality of the 5 quants (the base included)
    assert "rule prepare_drafter:" in output and "rule preflight_image:" in output


def test_each_job_gets_only_its_stages_resolved_config() -> None:
    """Compose once: the plan resolves every job's config; a stage's holds no drafter and no k, and is the same
    whichever cells of the sweep need it (narrowing the sweep to one drafter changes no stage)."""
    from specsweep.config.jobs import CellJob, ImageJob, ModelJob, QualityJob, QuantJob
    from specsweep.workflow_plan import plan_sweep

    full = plan_sweep([])
    narrowed = plan_sweep(["drafter=ngram", "k=4"])
    for stages, kind in ((full.models, ModelJob), (full.images, ImageJob), (full.quants, QuantJob)):
        for stage in stages.values():
            job = json.loads(stage.job_json)
            assert kind.model_validate(job) and not {"drafter", "k", "bench", "serve"} & set(job)
    for key, quant in full.quants.items():
        # No image: the embedded sweep quantizes in the model-tools env (image.quantizer.where = image names one).
        assert json.loads(quant.job_json).keys() == {"model", "quant", "image"} and json.loads(quant.job_json)["image"] is None
        assert set(QualityJob.model_validate_json(quant.quality_json).model_dump()) == {"model", "quant", "quality"}
        if key in narrowed.quants:
            assert narrowed.quants[key].job_json == quant.job_json
    assert set(narrowed.quants) == set(full.quants)
    # A cell job is its cell's resolved config, the same that Snakemake tracks.
    for cell_id, plan in full.cells.items():
        job = CellJob.model_validate_json(plan.job_json)
        assert job.id == cell_id and job.cell == plan.cell.config


def test_jobs_reuse_their_runs_plan_and_plan_for_themselves_otherwise(tmp_path: Path, monkeypatch) -> None:
    import pickle

    from specsweep.workflow_plan import PLAN_FILE_ENV, SweepPlan, plan_for_run

    monkeypatch.delenv(PLAN_FILE_ENV, raising=False)
    dead = tmp_path / ".snakemake/specsweep/plan-999999999.pickle"
    dead.parent.mkdir(parents=True)
    dead.write_bytes(b"a run whose process is gone")
    plan = plan_for_run("drafter=ngram k=4", None, True, tmp_path)
    saved = Path(os.environ[PLAN_FILE_ENV])
    assert saved.parent == dead.parent and not dead.exists()
    assert pickle.loads(saved.read_bytes()) == (json.dumps(["drafter=ngram k=4", None]), plan)
    # A job of that run loads what the file holds ...
    saved.write_bytes(pickle.dumps((json.dumps(["drafter=ngram k=4", None]), "the run's plan")))
    assert plan_for_run("drafter=ngram k=4", None, False, tmp_path) == "the run's plan"
    # ... a job asked for something else, or finding no readable file, composes its own.
    other = plan_for_run("drafter=none", None, False, tmp_path)
    assert isinstance(other, SweepPlan) and {c.split("-")[-1] for c in other.cells} == {"none"}
    saved.write_bytes(b"cut short")
    assert isinstance(plan_for_run("drafter=ngram k=4", None, False, tmp_path), SweepPlan)


def test_the_spark_sweeps_own_quants_are_made_in_its_image_and_hub_quants_are_not() -> None:
    from specsweep.config.jobs import QuantJob
    from specsweep.workflow_plan import plan_sweep

    plan = plan_sweep([], "spark")
    (image_key,) = plan.images
    in_image = {key.split("-")[1] for key, quant in plan.quants.items() if quant.image_key == image_key}
    assert in_image == {"nvfp4a16_gptq", "int4_autoround"}
    for key, quant in plan.quants.items():
        job = QuantJob.model_validate_json(quant.job_json)
        assert (job.image is not None) == (quant.image_key is not None)
        if job.image is not None:
            assert job.image.kind == "spark_docker" and job.image.quantizer.where == "image"
        # A 31B base is not forwarded in float32 on the host: quality through the served endpoints only.
        assert json.loads(quant.quality_json)["quality"]["in_process"] is False
    # The image's config is part of an in-image quant's key: another image is another checkpoint.
    other = plan_sweep(["image.quantizer.from_image=[torch]"], "spark")
    assert {k for k, q in other.quants.items() if q.image_key} != {k for k, q in plan.quants.items() if q.image_key}
    assert {k for k, q in other.quants.items() if not q.image_key} == {k for k, q in plan.quants.items() if not q.image_key}


@STARTS_SNAKEMAKE
def test_config_keys_other_than_overrides_and_sweep_fail_with_the_right_spelling(project: Path) -> None:
    from specsweep.workflow_plan import run_config

    # The obvious first try: each group as its own --config key. Not ignored: refused before any job, with the fix.
    result = snakemake(project, "-n", "--config", "quant=bf16", "drafter=ngram")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert '--config drafter, quant: specsweep reads only --config overrides="..." and sweep=NAME; Hydra overrides go in '
    'one key: --config overrides="drafter=ngram quant=bf16"' in output, output[-2000:]
    assert "localrule" not in output and not (project / "results").exists()
    with pytest.raises(ConfigError, match=r"--config sweeep \(did you mean --config sweep=\.\.\.\?\)"):
        run_config({"sweeep": "spark"})
    assert run_config({"overrides": "k=2", "sweep": "spark"}) == ("k=2", "spark")


@STARTS_SNAKEMAKE
def test_a_dry_run_changes_nothing(project: Path) -> None:
    """`snakemake -n` plans only: a lock a killed run left stays (a real run removes it: tests/test_reaper.py)."""
    from specsweep.workflow_plan import changes_nothing

    locks = project / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text(str(project / "results/x") + "\n")
    result = snakemake(project, "-np")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (locks / "0.input.lock").is_file() and "removed Snakemake's lock" not in result.stdout + result.stderr
    (locks / "0.input.lock").unlink()
    assert changes_nothing(["-n"]) and changes_nothing(["--dry-run", "--profile", "spark"]) and changes_nothing(["--lint"])
    assert not changes_nothing(["--cores", "2"]) and not changes_nothing(["--config", "overrides=k=2"])


def test_project_files_are_inputs_relative_to_the_workdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snakemake records each job's input set; an absolute path to a prompt, calibration or quality text would differ
    in a copied or moved project and re-measure every cell there (seen when a narrowed run ran on a copy)."""
    from specsweep.workflow_plan import plan_sweep

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    plan = plan_sweep([])
    inputs = [path for cell in plan.cells.values() for path in cell.prompt_files]
    inputs += [path for quant in plan.quants.values() for path in (*quant.inputs, *quant.quality_inputs)]
    assert "data/prompts/code_edit.txt" in inputs and any(path.startswith("data/calibration/") for path in inputs)
    assert [path for path in inputs if Path(path).is_absolute()] == []
