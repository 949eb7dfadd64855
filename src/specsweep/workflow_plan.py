"""What the Snakefile needs from Hydra: the cells of the sweep and the models and images they use.

Everything handed to a rule is a plain string, so Snakemake's params rerun trigger sees exactly
the resolved config of each job: editing one drafter's YAML changes only that drafter's cells.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from pydantic import BaseModel

from specsweep.advise.driver import planned
from specsweep.atomic import write_bytes
from specsweep.cell_progress import cell_progress
from specsweep.config.compose import ConfigError, cell_yaml, compose_raw
from specsweep.config.grid import Cell, expand, max_num_seqs, split_overrides
from specsweep.config.jobs import CellJob, DrafterJob, ImageJob, ModelJob, QualityJob, QuantJob, job_text, write_job
from specsweep.config.schema import ModelDrafter, ReportCfg, SweepCfg
from specsweep.config.secrets import require_forwarded
from specsweep.exit_status import describe_exit
from specsweep.images.preflight import needs_of, planned_argvs
from specsweep.paths import input_path, project_relative
from specsweep.quantize.run import calibration_path, quantizes_in_image
from specsweep.records.host import read_cpu_facts
from specsweep.serve.reaper import OWNER_ENV, run_markers
from specsweep.suggest import did_you_mean


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Stage:
    """A model, drafter or image stage: its key and its job config (specsweep.config.jobs), the text Snakemake
    tracks and the job runs."""

    key: str
    job_json: str


@dataclass(frozen=True)
class CellPlan:
    cell: Cell
    # The canonical cell config: tracked by Snakemake (a change reruns the cell).
    config_yaml: str
    # What the job runs: the same config with the cell's id, sweep and overrides (specsweep.config.jobs.CellJob).
    job_json: str
    model_key: str
    quant_key: str
    image_key: str
    prompt_files: tuple[str, ...]
    # Hub drafter weights prepared before the cell (hosts that download); None: no drafter weights to fetch.
    drafter_key: str | None = None
    # The plan picked this cell for lm-eval (eval.lm_eval.cells): a tracked param, so a change reruns the cell.
    lm_eval: bool = False

    def job_args(self, input, output, log) -> list[str]:
        """`specsweep job cell` arguments for this cell's Snakemake job."""
        from specsweep.cli.jobs import job_argv

        return job_argv("cell", cell_id=self.cell.id, out_dir=Path(output.bench).parent, model_receipt=input.model,
                        quant_receipt=input.quant, image_receipt=input.image, preflight_receipt=input.preflight,
                        drafter_receipt=input.drafter[0] if self.drafter_key else None, lm_eval=self.lm_eval,
                        server_log=log.server)  # fmt: skip


@dataclass(frozen=True)
class QuantStage(Stage):
    """A quant of a model: quantize once, measure quality once, whatever cells use it."""

    model_key: str
    # The image it is quantized in (image.quantizer.where = image); None: the model-tools env.
    image_key: str | None
    # Files the quantize job reads (calibration text): editing them reruns the quant.
    inputs: tuple[str, ...]
    # The quality job's config (specsweep.config.jobs.QualityJob).
    quality_json: str
    quality_inputs: tuple[str, ...]


@dataclass(frozen=True)
class ImageStage(Stage):
    """An image: built once, then checked once against what all the sweep's cells on it need (the preflight)."""

    needs_json: str = "{}"
    # The cells' server argvs for the preflight to parse (passed untracked: see workflow/rules/image.smk).
    argvs_json: str = "{}"


@dataclass(frozen=True)
class SweepPlan:
    sweep: str
    cells: dict[str, CellPlan]
    models: dict[str, Stage]
    quants: dict[str, QuantStage]
    images: dict[str, ImageStage]
    drafters: dict[str, Stage] = dataclasses.field(default_factory=dict)
    # The sweep's resolved report config (JSON), handed to report jobs as a tracked param.
    report_json: str = "{}"
    # The largest serve.max_num_seqs of the sweep's cells: where the advisor's batch-size schedule ends.
    max_num_seqs: int | None = None


def _stage(name: str, node: dict, job: BaseModel) -> Stage:
    """Keyed by the stage's own config node (its name and a hash: stable across unrelated config changes)."""
    text = yaml.safe_dump(node, sort_keys=True)
    return Stage(key=f"{name}-{_short_hash(text)}", job_json=job_text(job))


def plan_sweep(overrides: str | list[str] | None, sweep: str | None = None) -> SweepPlan:
    cells = expand(split_overrides(overrides), sweep)
    if not cells:
        raise ConfigError("the sweep expands to no cells; check sweep.params and your overrides")
    sweep_cfg, report_cfg = sweep_level_settings(overrides, cells)
    if sweep_cfg.strategy == "adaptive":
        # The rounds so far (results/<sweep>/adaptive.json), else the first: `specsweep adapt` adds the rest.
        cells = planned(cells, Path("results") / cells[0].sweep)
    try:
        require_forwarded(sorted({n for cell in cells for n in cell.config.serve.forward_env}), dict(os.environ))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    plans: dict[str, CellPlan] = {}
    models: dict[str, Stage] = {}
    quants: dict[str, QuantStage] = {}
    images: dict[str, Stage] = {}
    image_cells: dict[str, list] = {}
    drafters: dict[str, Stage] = {}
    for cell in cells:
        cfg = cell.config
        model = _stage(cfg.model.name, cfg.model.model_dump(mode="json"), ModelJob(model=cfg.model))
        image = _stage(cfg.image.name, cfg.image.model_dump(mode="json"), ImageJob(image=cfg.image))
        quant = _quant_stage(cell, model, image)
        models.setdefault(model.key, model)
        quants.setdefault(quant.key, quant)
        images.setdefault(image.key, image)
        image_cells.setdefault(image.key, []).append((cell.id, cfg))
        drafter = None
        if isinstance(cfg.drafter, ModelDrafter) and not cfg.image.offline:
            drafter = _stage(cfg.drafter.name, cfg.drafter.model_dump(mode="json"), DrafterJob(drafter=cfg.drafter))
            drafters.setdefault(drafter.key, drafter)
        plans[cell.id] = CellPlan(
            cell=cell,
            config_yaml=cell_yaml(cfg),
            job_json=job_text(CellJob(id=cell.id, sweep=cell.sweep, overrides=cell.overrides, cell=cfg)),
            model_key=model.key,
            quant_key=quant.key,
            image_key=image.key,
            prompt_files=tuple(input_path(w.prompt_file) for w in cfg.bench.workloads),
            drafter_key=drafter.key if drafter else None,
        )
    picked = lm_eval_cells(cells)
    plans = {cell_id: dataclasses.replace(plan, lm_eval=cell_id in picked) for cell_id, plan in plans.items()}
    image_stages = {
        key: ImageStage(**vars(stage), needs_json=needs_of([cfg for _, cfg in image_cells[key]]).model_dump_json(),
                        argvs_json=planned_argvs([cfg for _, cfg in image_cells[key]],
                                                 [cell_id for cell_id, _ in image_cells[key]]).model_dump_json())
        for key, stage in images.items()
    }
    return SweepPlan(
        sweep=cells[0].sweep, cells=plans, models=models, quants=quants, images=image_stages, drafters=drafters,
        report_json=report_cfg.model_dump_json(),
        max_num_seqs=max_num_seqs(cells),
    )  # fmt: skip


# Where the main Snakemake process left its plan for the jobs it spawns where a job runs in a child `snakemake`
# process that re-reads the Snakefile (a cluster executor's jobs, a run without the profile's force-use-threads).
PLAN_FILE_ENV = "SPECSWEEP_PLAN_FILE"


# What `--config` may set: anything else (quant=bf16, a typo like sweeep=spark) would be ignored without a word.
RUN_CONFIG_KEYS = ("overrides", "sweep")


def run_config(config: dict) -> tuple[str | list[str] | None, str | None]:
    """(overrides, sweep) from Snakemake's --config / --configfile; an unknown key fails with the right spelling."""
    unknown = sorted(set(config) - set(RUN_CONFIG_KEYS))
    if unknown:
        hints = [did_you_mean(key, RUN_CONFIG_KEYS, lambda k: f"--config {k}=...") for key in unknown]
        as_overrides = " ".join(f"{key}={config[key]}" for key in unknown if not hints[unknown.index(key)])
        fix = f'; Hydra overrides go in one key: --config overrides="{as_overrides}"' if as_overrides else ""
        raise ConfigError(f"--config {', '.join(f'{k}{h}' for k, h in zip(unknown, hints))}: specsweep reads only "
                          f"--config overrides=\"...\" and sweep=NAME{fix}")  # fmt: skip
    return config.get("overrides", ""), config.get("sweep")


def changes_nothing(argv: list[str]) -> bool:
    """A dry run or a lint: Snakemake only plans and prints, and the Snakefile must change nothing on disk either
    (no orphan reaped, no lock removed). Read with Snakemake's own parser (-np, --dry-run, --dryrun)."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(argv)
    except SystemExit:
        return False
    return bool(getattr(args, "dryrun", False) or getattr(args, "lint", None))


def plan_for_run(overrides: str | None, sweep: str | None, main_process: bool, workdir: Path) -> SweepPlan:
    """The sweep's plan, composed once per Snakemake run: the main process plans and leaves the plan in a file its
    jobs inherit (PLAN_FILE_ENV); a job loads it instead of composing every cell again (1.5–3 s of Hydra per job).

    A job asked for other overrides than its run's (not something Snakemake does) plans for itself."""
    asked = json.dumps([overrides, sweep])
    if not main_process:
        saved = os.environ.get(PLAN_FILE_ENV)
        if saved:
            try:
                with open(saved, "rb") as handle:
                    planned_for, plan = pickle.load(handle)
                if planned_for == asked:
                    return plan
            except (OSError, pickle.UnpicklingError, EOFError, ValueError):
                pass
        return plan_sweep(overrides, sweep)
    plan = plan_sweep(overrides, sweep)
    # One file per run, named by its main process; files of runs whose process is gone are removed.
    path = Path(workdir).resolve() / ".snakemake" / "specsweep" / f"plan-{os.getpid()}.pickle"
    for stale in path.parent.glob("plan-*.pickle"):
        if stale != path and not psutil.pid_exists(int(stale.stem.removeprefix("plan-") or 0)):
            stale.unlink(missing_ok=True)
    try:
        write_bytes(path, pickle.dumps((asked, plan)))
    except OSError:
        return plan  # the jobs compose it themselves: slower, the same plan
    os.environ[PLAN_FILE_ENV] = str(path)
    return plan


def lm_eval_cells(cells: list[Cell]) -> set[str]:
    """The cells lm-eval runs on (eval.lm_eval.cells). baselines: each (model, quant)'s no-drafter cell (a quant's
    score, and its recovery against the base's); baselines_plus_one adds the first drafter cell of a quant that has
    a baseline, as a cross-check (a drafter must not change the score); all: every cell."""
    configured = [cell for cell in cells if cell.config.eval.lm_eval is not None]
    baselines = {(c.config.model.name, c.config.quant.name): c.id for c in configured if c.config.drafter.kind == "none"}
    picked = set(baselines.values()) | {c.id for c in configured if c.config.eval.lm_eval.cells == "all"}
    cross_check = next((c for c in configured if c.config.eval.lm_eval.cells == "baselines_plus_one"
                        and c.config.drafter.kind != "none"
                        and (c.config.model.name, c.config.quant.name) in baselines), None)  # fmt: skip
    if cross_check is not None:
        picked.add(cross_check.id)
    return picked


def sweep_level_settings(overrides: str | list[str] | None, cells: list[Cell]) -> tuple[SweepCfg, ReportCfg]:
    """The sweep's own settings (sweep.*, report.*): composed once, from the sweep and the user's overrides of those
    groups only (the sweep alone may not be a valid cell: sweep=spark_cluster needs its nodes)."""
    sweep = next(o for o in cells[0].overrides if o.startswith("sweep="))
    own = [o for o in split_overrides(overrides) if o.split("=", 1)[0].lstrip("+~").split(".")[0] in ("sweep", "report")]
    raw, _ = compose_raw([sweep, *(o for o in own if not o.startswith("sweep="))])
    return SweepCfg.model_validate(raw["sweep"]), ReportCfg.model_validate(raw["report"])


def _quant_stage(cell: Cell, model: Stage, image: Stage) -> QuantStage:
    cfg = cell.config
    node: dict = {"model": model.key, "quant": cfg.quant.model_dump(mode="json")}
    # A quant made inside the sweep's image (image.quantizer.where = image) depends on that image.
    in_image = cfg.quant.kind in ("llmcompressor", "autoround") and quantizes_in_image(cfg.image)
    if in_image:
        node["image"] = image.key
    stage = _stage(f"{cfg.model.name}-{cfg.quant.name}", node,
                   QuantJob(model=cfg.model, quant=cfg.quant, image=cfg.image if in_image else None))  # fmt: skip
    inputs = []
    calibration = calibration_path(cfg.quant)
    if calibration is not None:
        if not calibration.is_file():
            raise ConfigError(
                f"quant {cfg.quant.name}: calibration file {calibration} does not exist; ship it under "
                "data/calibration/ or fix quant.calibration.path"
            )
        inputs.append(input_path(str(calibration)))
    text = project_relative(cell.quality.text)
    if not text.is_file():
        raise ConfigError(f"quality.text {text} does not exist; ship it under data/eval/ or fix conf/quality/")
    return QuantStage(
        key=stage.key,
        job_json=stage.job_json,
        model_key=model.key,
        image_key=image.key if in_image else None,
        inputs=tuple(inputs),
        quality_json=job_text(QualityJob(model=cfg.model, quant=cfg.quant, quality=cell.quality)),
        quality_inputs=(input_path(cell.quality.text),),
    )


def host_cpu_key() -> str:
    """This host's CPU (model and flags) as a short hash: the image record is valid only on the CPU it was probed on."""
    return _short_hash(read_cpu_facts().model_dump_json())


def run_cell_job(cell: CellPlan, input, output, log) -> None:
    """The run_cell rule's job, with its start and end on the console (specsweep.cell_progress)."""
    with cell_progress(cell.cell.id, output.bench, log.job):
        specsweep_job(cell.job_args(input, output, log), log.job, cell.job_json)


def specsweep_job(args: list[str], log: str, job_json: str | None = None) -> None:
    """Run one `specsweep` subcommand as a Snakemake job: argv list, output to the job's log; `job_json`, the job's
    config from the plan, is written next to the log and handed over as `--job-config`.

    The job carries its run's markers (set by the main Snakemake process, see specsweep.serve.reaper), so it stops
    when that run is killed and a later run can find what it left.
    """
    job = ["--job-config", str(write_job(log, job_json))] if job_json is not None else []
    argv = [sys.executable, "-m", "specsweep.cli", *map(str, args), *job]
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) if OWNER_ENV in os.environ else {**os.environ, **run_markers(Path.cwd(), os.getpid())}
    with open(log, "wb") as handle:
        handle.write(f"$ {shlex.join(argv)}\n".encode())
        handle.flush()
        returncode = subprocess.run(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        ).returncode
    if returncode != 0:
        raise RuntimeError(f"`specsweep {' '.join(args[:2])}` failed ({describe_exit(returncode)}); see {log}")
