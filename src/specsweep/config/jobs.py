"""What each Snakemake job runs: resolved once by the plan (specsweep.workflow_plan), written next to the job's log
and read by the job, which never composes Hydra config itself.

Each job config holds only what its stage depends on: a quantize job has a model and a quant, no drafter and no k,
so editing a drafter cannot rerun it, and a stage shared by many cells runs the same config whichever cell the plan
met first. The text Snakemake tracks as the job's `config` param is the job config itself: what is tracked is what
runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from specsweep.atomic import write_text
from specsweep.config.schema import CellCfg, ImageCfg, ModelCfg, ModelDrafter, QualityCfg, QuantCfg, Strict


class ModelJob(Strict):
    model: ModelCfg


class DrafterJob(Strict):
    drafter: ModelDrafter


class ImageJob(Strict):
    image: ImageCfg


class QuantJob(Strict):
    model: ModelCfg
    quant: QuantCfg
    # The sweep's image, when it quantizes inside itself (image.quantizer.where = image); else None.
    image: ImageCfg | None = None


class QualityJob(Strict):
    model: ModelCfg
    quant: QuantCfg
    quality: QualityCfg


class CellJob(Strict):
    id: str
    sweep: str
    # The overrides that composed it, kept for the record (`specsweep reproduce` starts from them).
    overrides: tuple[str, ...]
    cell: CellCfg


Job = TypeVar("Job", bound=BaseModel)


def job_text(job: BaseModel) -> str:
    return job.model_dump_json(indent=1) + "\n"


def job_path(log: str | Path) -> Path:
    """Where a job's config lives: next to its log (results/_logs/<rule>/<key>.job.json)."""
    log = Path(log)
    return log.with_name(log.name.removesuffix(".log") + ".job.json")


def write_job(log: str | Path, text: str) -> Path:
    path = job_path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    return path


def read_job(path: str | Path, kind: type[Job]) -> Job:
    try:
        return kind.model_validate_json(Path(path).read_text())
    except FileNotFoundError as err:
        raise SystemExit(f"job config {path} does not exist; Snakemake's plan writes it (run the workflow, not the job)") from err
    except ValidationError as err:
        raise SystemExit(f"job config {path} is not a valid {kind.__name__}: {err}; rerun Snakemake to rewrite it") from err
