"""The job entry points Snakemake's rules call: `specsweep job NAME`, hidden from the top-level help.

Each job reads the config the workflow plan resolved for it (`--job-config`, specsweep.config.jobs) and the records
of its inputs, and writes its own record. Its options are declared once, in JOBS: the parser and the argv a rule
builds (`job_argv`) both come from that declaration, so a rule and its job cannot disagree on a flag.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from specsweep.cli import results
from specsweep.cli.common import command
from specsweep.config.compose import config_hash
from specsweep.config.jobs import CellJob, DrafterJob, ImageJob, ModelJob, QualityJob, QuantJob, read_job
from specsweep.records.base import read_record


def cmd_model_prepare(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_json
    from specsweep.models.prepare import prepare_model

    record = prepare_model(read_job(args.job_config, ModelJob).model)
    write_json(Path(args.receipt), record.model_dump())
    print(f"[model] {record.name} ready at {record.location}", file=sys.stderr)


def cmd_drafter_prepare(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_json
    from specsweep.models.prepare import hub_record

    drafter = read_job(args.job_config, DrafterJob).drafter
    record = hub_record(drafter.name, drafter.model, drafter.revision or "main")
    write_json(Path(args.receipt), record.model_dump())
    print(f"[drafter] {record.name} ready at {record.location} (commit {record.revision})", file=sys.stderr)


def cmd_quant_run(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_json
    from specsweep.models.prepare import ModelRecord
    from specsweep.quantize.run import quantize
    from specsweep.records.image import ImageRecord

    job = read_job(args.job_config, QuantJob)
    base = read_record(ModelRecord, args.model_receipt)
    image = None
    if job.image is not None:
        if not args.image_receipt:
            raise SystemExit(f"specsweep job quantize: {job.quant.name} is quantized in image {job.image.name}: pass --image-receipt")
        image = (job.image, read_record(ImageRecord, args.image_receipt))
    try:
        record = quantize(job.quant, job.model, base, image)
    except ValueError as err:
        raise SystemExit(f"specsweep job quantize: {err}") from err
    write_json(Path(args.receipt), record.model_dump())
    print(f"[quantize] {record.model} / {record.quant}: {record.location}", file=sys.stderr)


def cmd_quant_quality(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_json
    from specsweep.evals.quality import evaluate
    from specsweep.models.prepare import ModelRecord
    from specsweep.quantize.run import QuantRecord

    job = read_job(args.job_config, QualityJob)
    base = read_record(ModelRecord, args.model_receipt)
    quant = read_record(QuantRecord, args.quant_receipt)
    record = evaluate(quant, base, job.quality)
    write_json(Path(args.out), record.model_dump())
    if record.status == "ok":
        print(
            f"[quality] {record.quant}: ppl {record.ppl:.3f} (base {record.ppl_base:.3f}), kld {record.kld:.4f}, "
            f"recovery {record.ppl_recovery_pct:.1f} %",
            file=sys.stderr,
        )
    else:
        print(f"[quality] {record.quant}: not measured: {record.reason}", file=sys.stderr)


def cmd_image_build(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_json
    from specsweep.images.base import build_image

    record = build_image(read_job(args.job_config, ImageJob).image)
    write_json(Path(args.receipt), record.model_dump())
    print(f"[image] {record.name}: vLLM {record.vllm_version} at {record.location}", file=sys.stderr)


def cmd_image_preflight(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_json
    from specsweep.images.base import ImageRecord, backend_of
    from specsweep.images.preflight import Needs, PlannedArgvs, run_preflight

    kind = backend_of(read_job(args.job_config, ImageJob).image)
    record = read_record(ImageRecord, args.image_receipt)
    print(f"[preflight] checking vLLM {record.vllm_version} in image {record.name} ({record.location[:19]})", file=sys.stderr)
    result = run_preflight(kind, record, Needs.model_validate_json(args.needs), PlannedArgvs.model_validate_json(args.argvs))
    write_json(Path(args.out), result.model_dump())
    # A failed preflight is a record, not a job failure: every cell of the image then fails with its message.
    print(f"[preflight] {record.name}: " + ("ok" if result.ok else result.failure()), file=sys.stderr)


def cmd_cell_run(args: argparse.Namespace) -> None:
    from specsweep.cell import run_cell
    from specsweep.config.grid import Cell
    from specsweep.images.base import ImageRecord
    from specsweep.images.preflight import PreflightRecord
    from specsweep.models.prepare import ModelRecord
    from specsweep.quantize.run import QuantRecord

    job = read_job(args.job_config, CellJob)
    if job.id != args.cell_id:
        raise SystemExit(f"specsweep job cell: the job config is cell {job.id}, not {args.cell_id}; rerun Snakemake")
    cell = Cell(id=job.id, sweep=job.sweep, overrides=job.overrides, config=job.cell, config_hash=config_hash(job.cell))
    model = read_record(ModelRecord, args.model_receipt)
    quant = read_record(QuantRecord, args.quant_receipt)
    image = read_record(ImageRecord, args.image_receipt)
    preflight = read_record(PreflightRecord, args.preflight_receipt)
    drafter = read_record(ModelRecord, args.drafter_receipt) if args.drafter_receipt else None
    receipts = (Path(args.model_receipt), Path(args.quant_receipt), Path(args.image_receipt))
    record = run_cell(
        cell, Path(args.out_dir), model, quant, image, Path(args.server_log), receipts=receipts, preflight=preflight,
        drafter=drafter, lm_eval_selected=args.lm_eval,
    )  # fmt: skip
    print(f"[cell] {cell.id}: {record.status}", file=sys.stderr)


def cmd_aggregate(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_text
    from specsweep.evals.quality import QualityRecord
    from specsweep.evals.summary import evals_table
    from specsweep.records.earlier import earlier_cells, quality_records_of
    from specsweep.records.table import build_table, quality_table, write_table

    planned = [Path(path).parent for path in args.bench_files]
    quality_files = [Path(path) for path in args.quality]
    earlier = earlier_cells(Path(args.sweep_dir), planned) if args.sweep_dir else {}
    if earlier:
        quality_files += quality_records_of(list(earlier.values()), Path(args.sweep_dir).parent, quality_files)
    cell_dirs = planned + list(earlier)
    quality = quality_table(quality_files)
    evals = evals_table(cell_dirs, [read_record(QualityRecord, p) for p in quality_files])
    table = build_table(cell_dirs, quality, evals, this_run={path.name for path in planned})
    write_table(table, Path(args.csv), Path(args.parquet))
    if args.quality_csv:
        write_text(Path(args.quality_csv), quality.to_csv(index=False))
    if args.evals_csv:
        write_text(Path(args.evals_csv), evals.to_csv(index=False))
    print(f"[aggregate] {len(table)} rows from {len(cell_dirs)} cells -> {args.csv}", file=sys.stderr)
    if earlier:
        print(f"[aggregate] {len(planned)} cells measured in this run; {len(earlier)} kept from earlier runs of the "
              f"sweep (column this_run): {', '.join(path.name for path in earlier)}", file=sys.stderr)  # fmt: skip
    for row in evals.itertuples():
        if isinstance(row.lossless_match_pct, float) and row.lossless_match_pct < 100:
            print(f"[aggregate] NOT LOSSLESS: {row.cell_id}: {row.lossless_detail}", file=sys.stderr)
        if isinstance(row.served_checkpoint_check, str) and not row.served_checkpoint_check.startswith(("ok", "not checked")):
            print(f"[aggregate] SERVED CHECKPOINT MISMATCH: {row.cell_id}: {row.served_checkpoint_check}", file=sys.stderr)
        if isinstance(row.lm_eval_error, str):
            print(f"[aggregate] LM-EVAL FAILED: {row.cell_id}: {row.lm_eval_error} (its throughput rows stand; to run it "
                  f"again: snakemake --force results/{row.sweep}/{row.cell_id}/bench.json)", file=sys.stderr)  # fmt: skip


def cmd_report_wandb_cell(args: argparse.Namespace) -> None:
    from specsweep.report.data import load_sweep
    from specsweep.report.wandb_runs import log_cell

    cell_dir = Path(args.cell_dir)
    receipt = log_cell(cell_dir, load_sweep(cell_dir.parent), results.report_cfg(args).wandb,
                       Path(args.receipt or cell_dir / "wandb.json"), force=args.force)  # fmt: skip
    where = f" at {(cell_dir.parent / receipt.run_dir).resolve()}" if receipt.run_dir else ""
    print(f"[wandb] {receipt.name}: {receipt.mode_used} run {receipt.run_id}{where}", file=sys.stderr)


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    # value: --flag VALUE (required unless optional); switch: --flag when true; repeated: --flag V per item;
    # positional: the items last.
    form: Literal["value", "switch", "repeated", "positional"] = "value"
    optional: bool = False
    type: Callable[[str], object] = str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Job:
    help: str
    run: Callable[[argparse.Namespace], None]
    options: tuple[Option, ...]
    # Whether the job reads a config the plan resolved for it (specsweep_job hands it over as --job-config).
    job_config: bool = True
    # What the shared handler expects of arguments a job does not take (the report jobs' config comes resolved).
    defaults: tuple[tuple[str, object], ...] = ()


REPORT_DEFAULTS = (("overrides", []),)


RECEIPT = Option("--receipt", "where to write the job's record (JSON)")
MODEL = Option("--model-receipt", "the prepared base model's record")
REPORT_CONFIG = Option("--report-config", "the sweep's report config as the plan resolved it (JSON)")
SWEEP_DIR = Option("--sweep-dir", "results/<sweep>")

JOBS: dict[str, Job] = {
    "model": Job("prepare the base weights as an HF dir vLLM serves", cmd_model_prepare, (RECEIPT,)),
    "drafter": Job("download, pin and check a hub drafter's weights", cmd_drafter_prepare, (RECEIPT,)),
    "quantize": Job("quantize the base model with the quant's recipe", cmd_quant_run, (
        RECEIPT, MODEL, Option("--image-receipt", "the image's record, when the quant is made inside it", optional=True),
    )),
    "quality": Job("perplexity / KL divergence of a quant vs its base", cmd_quant_quality, (
        Option("--out", "where to write the quality record (JSON)"), MODEL,
        Option("--quant-receipt", "the quant's record"),
    )),
    "image": Job("build (or find) the serving image and record it", cmd_image_build, (RECEIPT,)),
    "preflight": Job("check inside the image that its vLLM has what the cells need", cmd_image_preflight, (
        Option("--image-receipt", "the image's record"),
        Option("--needs", "what the cells need (JSON, specsweep.images.preflight.Needs)"),
        Option("--argvs", "the cells' server argvs to parse (JSON, specsweep.records.image.PlannedArgvs)"),
        Option("--out", "where to write the preflight record (JSON)"),
    )),
    "cell": Job("one sweep cell: serve, measure, evaluate, stop", cmd_cell_run, (
        Option("--cell-id", "the cell's id (checked against the job config)"),
        Option("--out-dir", "results/<sweep>/<cell>"),
        MODEL,
        Option("--quant-receipt", "the quant's record"),
        Option("--image-receipt", "the image's record"),
        Option("--preflight-receipt", "the image's preflight record"),
        Option("--drafter-receipt", "the prepared hub drafter's record (hosts that download weights)", optional=True),
        Option("--lm-eval", "run eval.lm_eval against the cell's server (the plan picks cells)", form="switch"),
        Option("--server-log", "where the server's log goes"),
    )),
    "aggregate": Job("the tidy results table from the cells' records", cmd_aggregate, (
        Option("--csv", "table.csv"), Option("--parquet", "table.parquet"),
        Option("--quality", "a quant's quality record (one per quant)", form="repeated"),
        Option("--quality-csv", "also write the quality table (one row per quant) here", optional=True),
        Option("--evals-csv", "also write the evals table (one row per cell) here", optional=True),
        Option("--sweep-dir", "also take the cells an earlier run of the sweep measured here", optional=True),
        Option("--bench-files", "the cells' bench.json records (this run's)", form="positional"),
    ), job_config=False),
    "advise": Job("the k-advisor on the sweep's table", results.cmd_advise, (
        SWEEP_DIR, Option("--out", "advice JSON (advice.md next to it)"),
        Option("--max-num-seqs", "the server's max batch: the schedule's last range ends there", optional=True,
               type=int),
    ), job_config=False),
    "report": Job("report.html and tables.md", results.cmd_report_build, (
        SWEEP_DIR, Option("--html", "report.html"), Option("--markdown", "tables.md"), REPORT_CONFIG,
    ), job_config=False, defaults=REPORT_DEFAULTS),
    "wandb-cell": Job("log one cell as a W&B run", cmd_report_wandb_cell, (
        Option("--cell-dir", "results/<sweep>/<cell>"), RECEIPT, REPORT_CONFIG,
        Option("--force", "log again even if nothing changed", form="switch"),
    ), job_config=False, defaults=REPORT_DEFAULTS),
    # Each cell's run is its own wandb-cell job: this one logs the sweep's run only.
    "wandb-sweep": Job("the W&B report spec and the sweep's aggregate run", results.cmd_report_wandb_sweep, (
        SWEEP_DIR, RECEIPT, Option("--spec", "the W&B report spec"), REPORT_CONFIG,
    ), job_config=False, defaults=(*REPORT_DEFAULTS, ("cells", False))),
}  # fmt: skip


def job_argv(name: str, **values: object) -> list[str]:
    """`specsweep` arguments of job `name` (without --job-config, which specsweep_job adds): values by option dest;
    an optional value or a switch left out or None/False is omitted."""
    job = JOBS[name]
    unknown = set(values) - {option.dest for option in job.options}
    if unknown:
        raise TypeError(f"job {name} has no option(s) {sorted(unknown)}")
    argv, positional = ["job", name], []
    for option in job.options:
        value = values.get(option.dest)
        if option.form == "positional":
            positional += [str(item) for item in value or []]
        elif option.form == "repeated":
            argv += [part for item in value or [] for part in (option.flag, str(item))]
        elif option.form == "switch":
            argv += [option.flag] if value else []
        elif value is not None:
            argv += [option.flag, str(value)]
        elif not option.optional:
            raise TypeError(f"job {name} needs {option.flag}")
    return argv + positional


def register(sub: argparse._SubParsersAction) -> None:
    # No help: a job is Snakemake's to call, and stays out of the top-level command list.
    jobs = sub.add_parser("job", description="Snakemake's job entry points (each rule calls one).")
    job_sub = jobs.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, job in JOBS.items():
        p = command(job_sub, name, job.help)
        if job.job_config:
            p.add_argument("--job-config", required=True,
                           help="the job's config as the workflow plan resolved it (specsweep.config.jobs)")  # fmt: skip
        for option in job.options:
            if option.form == "positional":
                p.add_argument(option.dest, nargs="+", help=option.help)
            elif option.form == "switch":
                p.add_argument(option.flag, action="store_true", help=option.help)
            elif option.form == "repeated":
                p.add_argument(option.flag, action="append", default=[], help=option.help)
            else:
                p.add_argument(option.flag, required=not option.optional, default=None, type=option.type,
                               help=option.help)  # fmt: skip
        p.set_defaults(func=job.run, **dict(job.defaults))
