"""What the Snakefile needs from Hydra: the cells of the sweep and the models and images they use.

Everything handed to a rule is a plain string, so Snakemake's params rerun trigger sees exactly
the resolved config of each job: editing one drafter's YAML changes only that drafter's cells.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from specsweep.config.compose import cell_yaml, compose_cell, project_relative
from specsweep.config.grid import Cell, expand, split_overrides


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Stage:
    """A model or image build: its resolved config and overrides that compose it."""

    key: str
    config_yaml: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class CellPlan:
    cell: Cell
    config_yaml: str
    model_key: str
    image_key: str
    prompt_files: tuple[str, ...]

    def job_args(self, input, output, log) -> list[str]:
        """`specsweep cell run` arguments for this cell's Snakemake job."""
        return [
            "cell", "run",
            "--cell-id", self.cell.id,
            "--out-dir", str(Path(output.bench).parent),
            "--model-receipt", input.model,
            "--image-receipt", input.image,
            "--server-log", log.server,
            *self.cell.overrides,
        ]  # fmt: skip


@dataclass(frozen=True)
class SweepPlan:
    sweep: str
    cells: dict[str, CellPlan]
    models: dict[str, Stage]
    images: dict[str, Stage]
    # The sweep's resolved report config (JSON), handed to report jobs as a tracked param.
    report_json: str = "{}"


def _stage(name: str, node: dict, overrides: tuple[str, ...]) -> Stage:
    text = yaml.safe_dump(node, sort_keys=True)
    return Stage(key=f"{name}-{_short_hash(text)}", config_yaml=text, overrides=overrides)


def plan_sweep(overrides: str | list[str] | None, sweep: str | None = None) -> SweepPlan:
    cells = expand(split_overrides(overrides), sweep)
    if not cells:
        raise ValueError("the sweep expands to no cells; check sweep.params and your overrides")
    plans: dict[str, CellPlan] = {}
    models: dict[str, Stage] = {}
    images: dict[str, Stage] = {}
    for cell in cells:
        cfg = cell.config
        model = _stage(cfg.model.name, cfg.model.model_dump(mode="json"), cell.overrides)
        image = _stage(cfg.image.name, cfg.image.model_dump(mode="json"), cell.overrides)
        models.setdefault(model.key, model)
        images.setdefault(image.key, image)
        plans[cell.id] = CellPlan(
            cell=cell,
            config_yaml=cell_yaml(cfg),
            model_key=model.key,
            image_key=image.key,
            prompt_files=tuple(str(project_relative(w.prompt_file)) for w in cfg.bench.workloads),
        )
    return SweepPlan(
        sweep=cells[0].sweep, cells=plans, models=models, images=images, report_json=_report_json(overrides, cells)
    )


def _report_json(overrides: str | list[str] | None, cells: list[Cell]) -> str:
    sweep = next(o for o in cells[0].overrides if o.startswith("sweep="))
    report_overrides = [o for o in split_overrides(overrides) if o.split("=", 1)[0].lstrip("+~").split(".")[0] == "report"]
    return compose_cell([sweep, *report_overrides]).report.model_dump_json()


def specsweep_job(args: list[str], log: str) -> None:
    """Run one `specsweep` subcommand as a Snakemake job: argv list, output to the job's log."""
    argv = [sys.executable, "-m", "specsweep.cli", *map(str, args)]
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        handle.write(f"$ {shlex.join(argv)}\n".encode())
        handle.flush()
        returncode = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if returncode != 0:
        raise RuntimeError(f"`specsweep {args[0]} {args[1]}` failed with exit code {returncode}; see {log}")
