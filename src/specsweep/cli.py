"""The `specsweep` command. Snakemake jobs call its subcommands; people call `config`, `cells` and `run`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from specsweep.atomic import OutputError
from specsweep.config.compose import ConfigError, cell_yaml, compose_cell, config_hash
from specsweep.config.jobs import CellJob, DrafterJob, ImageJob, ModelJob, QualityJob, QuantJob, read_job


def _on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM (Snakemake cancelling a job) into SystemExit so every `finally` stops its server.
    raise SystemExit(128 + signum)


def cmd_config(args: argparse.Namespace) -> None:
    from specsweep.config.grid import check_k_has_a_drafter, readable_id
    from specsweep.images.base import LaunchSpec, kind_of
    from specsweep.models.prepare import model_location
    from specsweep.serve.speculative import cell_speculative_config

    composed = compose_cell(args.overrides)
    cell = composed.cell
    check_k_has_a_drafter(args.overrides, [cell])
    print(f"# cell {readable_id(composed)}  (config hash {config_hash(cell)[:12]})")
    print(cell_yaml(cell), end="")
    kind = kind_of(cell.image)
    image = kind.preview()
    port = cell.serve.port or 8000
    location = {"none": model_location(cell.model), "hub": getattr(cell.quant, "repo_id", "")}.get(cell.quant.kind)
    if location is None:
        location = f"<{cell.model.name}-{cell.quant.name} checkpoint>"
        print(f"\n# {location}: built by the quantize stage (`specsweep quant run`); its path is in results/_quants/")
    serving = image.serving_by_dtype.get(cell.model.dtype)
    if serving is not None:
        print(f"\n# serving dtype on this host: {serving.dtype} ({serving.dtype_reason}); the W4A16 kernel is chosen "
              "from build_image's probe")  # fmt: skip
    spec = LaunchSpec(cell=cell, model_location=location, port=port, name=f"specsweep-{readable_id(composed)}",
                      dtype=serving.dtype if serving else None, env={}, labels={})  # fmt: skip
    command = kind.server_command(image, spec)
    print("\n# speculative config")
    print(cell_speculative_config(cell) or "(none: no --speculative-config flag)")
    print("\n# vLLM server argv" + ("" if cell.serve.port else " (port chosen free at run time; 8000 shown)"))
    print(shlex.join(command.argv))


def cmd_cells(args: argparse.Namespace) -> None:
    from specsweep.config.grid import expand

    for cell in expand(args.overrides, args.sweep):
        print(f"{cell.sweep}/{cell.id}\t{' '.join(cell.overrides)}")


@contextlib.contextmanager
def snakemake_argv(overrides: list[str], sweep: str | None, extra: list[str], prefix: str):
    """Snakemake's argv with the overrides in a config file, not `--config overrides="..."`: Snakemake re-parses
    --config values, which mangles quotes and brackets in overrides (e.g. bench.workloads=[{...}]); a YAML list
    reaches the plan item by item. The file lives while the context does."""
    import tempfile

    import yaml

    from specsweep.paths import project_root

    config = {"overrides": list(overrides), **({"sweep": sweep} if sweep else {})}
    (project_root() / ".snakemake").mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=prefix, dir=project_root() / ".snakemake") as handle:
        yaml.safe_dump(config, handle)
        handle.flush()
        print(f"[{prefix.split('-')[1]}] config {handle.name}: {json.dumps(config)}", file=sys.stderr)
        yield [sys.executable, "-m", "snakemake", "--configfile", handle.name, *extra]


def cmd_run(args: argparse.Namespace) -> None:
    """One cell (or a few) through the same DAG as the full sweep: Snakemake builds what it needs."""
    from specsweep.config.grid import expand
    from specsweep.paths import project_root

    cells = expand(args.overrides, args.sweep)
    targets = [f"results/{cell.sweep}/{cell.id}/bench.json" for cell in cells]
    with snakemake_argv(args.overrides, args.sweep, args.snakemake_args, "specsweep-run-") as argv:
        argv += ["--", *targets]
        print(f"[run] {shlex.join(argv)}", file=sys.stderr)
        raise SystemExit(run_forwarding_signals(argv, project_root()))


def cmd_adapt(args: argparse.Namespace) -> None:
    """An adaptive sweep, round by round: Snakemake runs the planned cells, the k-advisor picks the next ones."""
    from specsweep.advise.driver import adapt, describe
    from specsweep.config.grid import expand
    from specsweep.paths import project_root

    overrides = [*args.overrides, "sweep.strategy=adaptive"]
    cells = expand(overrides, args.sweep)
    with snakemake_argv(overrides, args.sweep, args.snakemake_args, "specsweep-adapt-") as argv:

        def run_round() -> None:
            print(f"[adapt] {shlex.join(argv)}", file=sys.stderr, flush=True)
            if (code := run_forwarding_signals(argv, project_root())) != 0:
                raise SystemExit(code)

        state = adapt(cells, project_root() / "results" / cells[0].sweep, run_round)
    print(f"[adapt] done: {describe(state)}", file=sys.stderr)


def run_forwarding_signals(argv: list[str], cwd: Path) -> int:
    """Run Snakemake as a terminal would, and hand it Ctrl-C instead of dying on it.

    `subprocess.run` kills its child outright on KeyboardInterrupt, which left Snakemake's lock behind. Here
    Snakemake runs in its own process group and every SIGINT/SIGTERM the wrapper gets is passed to that whole
    group once (Snakemake and its jobs, as a terminal's Ctrl-C reaches a foreground job); the wrapper waits
    for Snakemake to stop its jobs and release the lock, and exits with its code.
    """
    child = subprocess.Popen(argv, cwd=cwd, process_group=0)

    def forward(signum: int, frame: object) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    base = ModelRecord.model_validate_json(Path(args.model_receipt).read_text())
    image = None
    if job.image is not None:
        if not args.image_receipt:
            raise SystemExit(f"specsweep quant run: {job.quant.name} is quantized in image {job.image.name}: pass --image-receipt")
        image = (job.image, ImageRecord.model_validate_json(Path(args.image_receipt).read_text()))
    try:
        record = quantize(job.quant, job.model, base, image)
    except ValueError as err:
        raise SystemExit(f"specsweep quant run: {err}") from err
    write_json(Path(args.receipt), record.model_dump())
    print(f"[quantize] {record.model} / {record.quant}: {record.location}", file=sys.stderr)


def cmd_quant_quality(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_json
    from specsweep.evals.quality import evaluate
    from specsweep.models.prepare import ModelRecord
    from specsweep.quantize.run import QuantRecord

    job = read_job(args.job_config, QualityJob)
    base = ModelRecord.model_validate_json(Path(args.model_receipt).read_text())
    quant = QuantRecord.model_validate_json(Path(args.quant_receipt).read_text())
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
    from specsweep.images.base import ImageRecord, kind_of
    from specsweep.images.preflight import Needs, PlannedArgvs, run_preflight

    kind = kind_of(read_job(args.job_config, ImageJob).image)
    record = ImageRecord.model_validate_json(Path(args.image_receipt).read_text())
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
        raise SystemExit(f"specsweep cell run: the job config is cell {job.id}, not {args.cell_id}; rerun Snakemake")
    cell = Cell(id=job.id, sweep=job.sweep, overrides=job.overrides, config=job.cell, config_hash=config_hash(job.cell))
    model = ModelRecord.model_validate_json(Path(args.model_receipt).read_text())
    quant = QuantRecord.model_validate_json(Path(args.quant_receipt).read_text())
    image = ImageRecord.model_validate_json(Path(args.image_receipt).read_text())
    preflight = PreflightRecord.model_validate_json(Path(args.preflight_receipt).read_text())
    drafter = ModelRecord.model_validate_json(Path(args.drafter_receipt).read_text()) if args.drafter_receipt else None
    receipts = (Path(args.model_receipt), Path(args.quant_receipt), Path(args.image_receipt))
    record = run_cell(
        cell, Path(args.out_dir), model, quant, image, Path(args.server_log), receipts=receipts, preflight=preflight,
        drafter=drafter, lm_eval_selected=args.lm_eval,
    )  # fmt: skip
    print(f"[cell] {cell.id}: {record.status}", file=sys.stderr)


def cmd_aggregate(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_text
    from specsweep.evals.quality import QualityRecord
    from specsweep.evals.table import evals_table
    from specsweep.records.table import build_table, quality_table, write_table

    cell_dirs = [Path(path).parent for path in args.bench_files]
    quality = quality_table([Path(path) for path in args.quality])
    evals = evals_table(cell_dirs, [QualityRecord.model_validate_json(Path(p).read_text()) for p in args.quality])
    table = build_table(cell_dirs, quality, evals)
    write_table(table, Path(args.csv), Path(args.parquet))
    if args.quality_csv:
        write_text(Path(args.quality_csv), quality.to_csv(index=False))
    if args.evals_csv:
        write_text(Path(args.evals_csv), evals.to_csv(index=False))
    print(f"[aggregate] {len(table)} rows from {len(cell_dirs)} cells -> {args.csv}", file=sys.stderr)
    for row in evals.itertuples():
        if isinstance(row.lossless_match_pct, float) and row.lossless_match_pct < 100:
            print(f"[aggregate] NOT LOSSLESS: {row.cell_id}: {row.lossless_detail}", file=sys.stderr)
        if isinstance(row.served_checkpoint_check, str) and not row.served_checkpoint_check.startswith(("ok", "not checked")):
            print(f"[aggregate] SERVED CHECKPOINT MISMATCH: {row.cell_id}: {row.served_checkpoint_check}", file=sys.stderr)
        if isinstance(row.lm_eval_error, str):
            print(f"[aggregate] LM-EVAL FAILED: {row.cell_id}: {row.lm_eval_error} (its throughput rows stand; to run it "
                  f"again: snakemake --force results/{row.sweep}/{row.cell_id}/bench.json)", file=sys.stderr)  # fmt: skip


def cmd_advise(args: argparse.Namespace) -> None:
    from specsweep.advise.advice import advise_sweep_dir, markdown
    from specsweep.atomic import write_json, write_text

    sweep_dir = Path(args.sweep_dir)
    advice = advise_sweep_dir(sweep_dir, args.max_num_seqs)
    out = Path(args.out) if args.out else sweep_dir / "advice.json"
    write_json(out, advice.model_dump())
    write_text(out.with_suffix(".md"), markdown(advice))
    for recommendation in advice.recommendations:
        print(f"[advise] {recommendation.quant} / {recommendation.drafter} / {recommendation.workload}: "
              f"--speculative-config '{json.dumps(recommendation.speculative_config)}'", file=sys.stderr)  # fmt: skip
    print(f"[advise] {len(advice.groups)} groups -> {out} and {out.with_suffix('.md')}", file=sys.stderr)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from specsweep.reproduce import reproduce

    try:
        result = reproduce(args.target, Path(args.results), rerun=not args.check_only)
    except ValueError as err:
        raise SystemExit(f"specsweep reproduce: {err}") from err
    print(f"# specsweep reproduce: {result.recorded}\n")
    print("## What differs from the record\n")
    print("\n".join(f"- {line}" for line in result.warnings) or "- nothing: same code, config, image, weights and hardware")
    if result.rerun is not None:
        print(f"\n## Old vs new ({result.rerun})\n")
        print("\n".join(f"- {line}" for line in result.greedy))
        print()
        print(result.report)


def cmd_compare(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_text
    from specsweep.report.compare import compare, html_page, markdown

    pair = None
    if args.pair:
        key, _, values = args.pair.partition("=")
        value_a, _, value_b = values.partition(",")
        if not key or not value_a or not value_b:
            raise SystemExit(f"--pair {args.pair!r}: write it as GROUP=A_VALUE,B_VALUE, e.g. quant=bf16,w4a16_gptq")
        pair = (key, value_a, value_b)
    try:
        comparison = compare(Path(args.sweep_a), Path(args.sweep_b), args.ignore, pair, args.alpha)
    except ValueError as err:
        raise SystemExit(f"specsweep compare: {err}") from err
    text = markdown(comparison)
    print(text)
    if args.markdown:
        write_text(Path(args.markdown), text)
    if args.html:
        write_text(Path(args.html), html_page(comparison))
    print(f"[compare] {len(comparison.flagged)} of {len(comparison.changes)} changes beyond the noise", file=sys.stderr)


def _report_cfg(args: argparse.Namespace):
    """The sweep's report config: as the Snakefile resolved it (--report-config), else composed from overrides."""
    from specsweep.config.schema import ReportCfg

    if args.report_config:
        return ReportCfg.model_validate_json(args.report_config)
    return compose_cell(args.overrides).report


def cmd_report_build(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_text
    from specsweep.report import html, markdown
    from specsweep.report.data import load_sweep
    from specsweep.report.figures import FIGURES
    from specsweep.report.progress import progress

    sweep_dir = Path(args.sweep_dir)
    cfg = _report_cfg(args)
    data = load_sweep(sweep_dir)
    html_path = Path(args.html or sweep_dir / "report.html")
    md_path = Path(args.markdown or sweep_dir / "tables.md")
    with progress("figures", len(FIGURES)) as advance:
        write_text(html_path, html.render(data, dpi=cfg.html.dpi, progress=advance))
    write_text(md_path, markdown.render(data) + "\n")
    print(f"[report] {html_path} and {md_path}", file=sys.stderr)


def cmd_report_wandb_cell(args: argparse.Namespace) -> None:
    from specsweep.report.data import load_sweep
    from specsweep.report.wandb_runs import log_cell

    cell_dir = Path(args.cell_dir)
    receipt = log_cell(cell_dir, load_sweep(cell_dir.parent), _report_cfg(args).wandb,
                       Path(args.receipt or cell_dir / "wandb.json"), force=args.force)  # fmt: skip
    print(f"[wandb] {receipt.name}: {receipt.mode_used} run {receipt.run_id} {receipt.run_dir or ''}", file=sys.stderr)


def cmd_report_wandb_sweep(args: argparse.Namespace) -> None:
    from specsweep.report.data import load_sweep
    from specsweep.report.progress import progress
    from specsweep.report.wandb_report import write_spec
    from specsweep.report.wandb_runs import log_cell, log_sweep

    sweep_dir = Path(args.sweep_dir)
    cfg = _report_cfg(args).wandb
    data = load_sweep(sweep_dir)
    if args.cells:
        # Outside Snakemake: log every cell here too (unchanged cells are kept, not re-logged).
        cells = [sweep_dir / str(c) for c in sorted(data.table["cell_id"].unique())]
        with progress("wandb cells", len(cells)) as advance:
            for cell_dir in cells:
                log_cell(cell_dir, data, cfg, cell_dir / "wandb.json")
                advance(cell_dir.name)
    spec_path = Path(args.spec or sweep_dir / "wandb_report.json")
    spec = write_spec(data, cfg, spec_path)
    attach = [sweep_dir / name for name in ("table.csv", "quality.csv", "tables.md", "report.html")] + [spec_path]
    receipt = log_sweep(sweep_dir, data, cfg, Path(args.receipt or sweep_dir / "wandb.json"), attach)
    print(f"[wandb] report spec with {len(spec['panels'])} panels -> {spec_path}", file=sys.stderr)
    print(f"[wandb] sweep: {receipt.mode_used} run {receipt.run_id} {receipt.run_dir or ''}", file=sys.stderr)


def cmd_report_publish(args: argparse.Namespace) -> None:
    from specsweep.report.wandb_report import publish

    spec = Path(args.spec or Path(args.sweep_dir) / "wandb_report.json")
    if not spec.is_file():
        raise SystemExit(f"specsweep report publish: {spec} does not exist; run the sweep (or `report wandb`) first")
    print(publish(spec, entity=args.entity, project=args.project))


def _extra_body(items: list[str]) -> dict:
    """llama-benchy's --extra-body: key=value or key:value, comma-separated or repeated; values as JSON."""
    import json

    body: dict = {}
    for item in items:
        for pair in filter(None, (part.strip() for part in item.split(","))):
            key, sep, value = pair.partition("=") if "=" in pair else pair.partition(":")
            if not sep:
                raise SystemExit(f"--extra-body {pair!r}: expected key=value")
            try:
                body[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                body[key.strip()] = value
    return body


def _api_key(args: argparse.Namespace) -> str | None:
    """The key comes from the environment: on the command line, `ps` would show it to every user of the host."""
    if args.api_key is not None:
        raise SystemExit(
            "specsweep bench: --api-key would show the key to anyone running `ps`; export it instead "
            f"(export {args.api_key_env}=...) or name the variable holding it with --api-key-env VAR"
        )
    return os.environ.get(args.api_key_env) or None


def cmd_bench(args: argparse.Namespace) -> None:
    import asyncio

    from specsweep.atomic import write_text
    from specsweep.bench.corpus import PromptSource, load_tokenizer
    from specsweep.bench.engine import Bench, BenchSettings
    from specsweep.bench.inputs import BenchAbort
    from specsweep.bench.tables import FORMATS

    api_key = _api_key(args)
    if not args.tokenizer:
        raise SystemExit("specsweep bench: --tokenizer is required (a model dir or tokenizer.json); nothing is fetched")
    settings = BenchSettings(
        base_url=args.base_url,
        api_key=api_key,
        model=args.model,
        pp=args.pp,
        tg=args.tg,
        depth=args.depth,
        runs=args.runs,
        concurrency=args.concurrency,
        latency_mode=args.latency_mode,
        warmup=not args.no_warmup,
        endpoint=args.endpoint,
        exact_tg=not args.no_exact_tg,
        prefix_caching=args.no_cache_busting,
        adapt_prompt=args.adapt_prompt,
        request_timeout_s=args.request_timeout,
        extra_body=_extra_body(args.extra_body),
    )
    prompts = PromptSource(load_tokenizer(args.tokenizer), args.text, seed=args.seed)
    try:
        report = asyncio.run(Bench(settings, prompts).run())
    except BenchAbort as err:
        raise SystemExit(f"specsweep bench: {err}") from None
    output = FORMATS[args.format](report)
    if args.save_result:
        write_text(Path(args.save_result), output + "\n")
        print(f"[bench] saved {args.format} to {args.save_result}", file=sys.stderr)
    else:
        print(output)
    if any(row.errors.failed for row in report.benchmarks):
        raise SystemExit(1)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="specsweep", description="Speculative-decoding sweeps with vLLM.")
    sub = top.add_subparsers(dest="command", required=True)

    def with_overrides(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. drafter=ngram k=3")
        return p

    def with_job_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--job-config", required=True,
                       help="the job's config as the workflow plan resolved it (specsweep.config.jobs; Snakemake writes it)")  # fmt: skip
        return p

    p = with_overrides(sub.add_parser("config", help="print the resolved cell config and its vLLM argv"))
    p.set_defaults(func=cmd_config)

    p = with_overrides(sub.add_parser("cells", help="list the cells a sweep (with overrides) expands to"))
    p.add_argument("--sweep", help="sweep option under conf/sweep (default: from conf/config.yaml)")
    p.set_defaults(func=cmd_cells)

    p = with_overrides(sub.add_parser("run", help="run the cells matching the overrides through Snakemake"))
    p.add_argument("--sweep")
    p.add_argument("--snakemake-args", default="", type=shlex.split, help="extra Snakemake flags, quoted")
    p.set_defaults(func=cmd_run)
    p = with_overrides(sub.add_parser("adapt", help="an adaptive sweep: measure few k, predict, confirm the best"))
    p.add_argument("--sweep")
    p.add_argument("--snakemake-args", default="", type=shlex.split, help="extra Snakemake flags, quoted")
    p.set_defaults(func=cmd_adapt)

    model = sub.add_parser("model", help="base model preparation").add_subparsers(dest="action", required=True)
    p = with_job_config(model.add_parser("prepare"))
    p.add_argument("--receipt", required=True, help="where to write the model record (JSON)")
    p.set_defaults(func=cmd_model_prepare)

    quant = sub.add_parser("quant", help="the quant axis").add_subparsers(dest="action", required=True)
    p = with_job_config(quant.add_parser("run", help="quantize the base model with the cell's quant recipe"))
    p.add_argument("--receipt", required=True, help="where to write the quant record (JSON)")
    p.add_argument("--model-receipt", required=True, help="the prepared base model's record")
    p.add_argument("--image-receipt", default=None, help="the image's record, when the quant is made inside it")
    p.set_defaults(func=cmd_quant_run)
    p = with_job_config(quant.add_parser("quality", help="perplexity / KL divergence of a quant vs its base"))
    p.add_argument("--out", required=True, help="where to write the quality record (JSON)")
    p.add_argument("--model-receipt", required=True)
    p.add_argument("--quant-receipt", required=True)
    p.set_defaults(func=cmd_quant_quality)

    drafter = sub.add_parser("drafter", help="drafter weights").add_subparsers(dest="action", required=True)
    p = with_job_config(drafter.add_parser("prepare", help="download, pin and check a hub drafter's weights"))
    p.add_argument("--receipt", required=True, help="where to write the drafter's record (JSON)")
    p.set_defaults(func=cmd_drafter_prepare)

    image = sub.add_parser("image", help="serving images").add_subparsers(dest="action", required=True)
    p = with_job_config(image.add_parser("build"))
    p.add_argument("--receipt", required=True, help="where to write the image manifest (JSON)")
    p.set_defaults(func=cmd_image_build)
    p = with_job_config(image.add_parser("preflight", help="check inside the image that its vLLM has what the cells need"))
    p.add_argument("--image-receipt", required=True)
    p.add_argument("--needs", required=True, help="what the cells need (JSON, specsweep.images.preflight.Needs)")
    p.add_argument("--argvs", default="{}", help="the cells' server argvs to parse (JSON, specsweep.records.image.PlannedArgvs)")
    p.add_argument("--out", required=True, help="where to write the preflight record (JSON)")
    p.set_defaults(func=cmd_image_preflight)

    cell = sub.add_parser("cell", help="one sweep cell").add_subparsers(dest="action", required=True)
    p = with_job_config(cell.add_parser("run"))
    p.add_argument("--cell-id", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--model-receipt", required=True)
    p.add_argument("--quant-receipt", required=True)
    p.add_argument("--image-receipt", required=True)
    p.add_argument("--preflight-receipt", required=True)
    p.add_argument("--drafter-receipt", default=None, help="the prepared hub drafter (hosts that download weights)")
    p.add_argument("--lm-eval", action="store_true", help="run eval.lm_eval against the cell's server (the plan picks cells)")
    p.add_argument("--server-log", required=True)
    p.set_defaults(func=cmd_cell_run)

    from specsweep.bench.inputs import non_negative_int, positive_float, positive_int

    p = sub.add_parser("bench", help="llama-benchy-compatible benchmark of any OpenAI-compatible server")
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the key sent as a Bearer token (default OPENAI_API_KEY; unset: "
                        "no key); never written to results")  # fmt: skip
    p.add_argument("--api-key", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help="served model name (default: the first of /models)")
    p.add_argument("--tokenizer", default=None, help="model dir or tokenizer.json used to cut exact-length prompts")
    # Sizes are checked here, before any request; depth + pp + tg against max_model_len once the server answers.
    p.add_argument("--pp", type=positive_int, nargs="+", default=[2048], help="prompt tokens per test")
    p.add_argument("--tg", type=positive_int, nargs="+", default=[32], help="generated tokens per test")
    p.add_argument("--depth", type=non_negative_int, nargs="+", default=[0], help="context tokens before the prompt")
    p.add_argument("--runs", type=positive_int, default=3)
    p.add_argument("--concurrency", type=positive_int, nargs="+", default=[1])
    p.add_argument("--request-timeout", type=positive_float, default=600,
                   help="seconds per request, sending to last byte; a slower request counts as failed")  # fmt: skip
    p.add_argument("--latency-mode", choices=["api", "generation", "none"], default="api")
    p.add_argument("--no-warmup", action="store_true")
    # Not llama-benchy's --enable-prefix-caching (a context-load + inference measurement, not implemented here).
    p.add_argument("--no-cache-busting", action="store_true",
                   help="send prompts without the unique suffix that defeats the server's prefix cache")  # fmt: skip
    p.add_argument("--no-adapt-prompt", dest="adapt_prompt", action="store_false",
                   help="do not shrink prompts by the tokens the server's template adds")  # fmt: skip
    p.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    p.add_argument("--no-exact-tg", action="store_true", help="do not force tg tokens with min_tokens + ignore_eos")
    p.add_argument("--extra-body", action="append", default=[], help="key=value merged into every request")
    p.add_argument("--text", default=None, help="text to cut prompts from (default: data/text/alice.txt)")
    p.add_argument("--seed", type=int, default=None,
                   help="fix prompt windows (a rerun then replays prompts the server may have cached)")  # fmt: skip
    p.add_argument("--format", choices=["md", "json", "csv"], default="md")
    p.add_argument("--save-result", default=None)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("aggregate", help="build the tidy results table from cell records")
    p.add_argument("--csv", required=True)
    p.add_argument("--parquet", required=True)
    p.add_argument("--quality", action="append", default=[], help="a quant's quality record (repeat per quant)")
    p.add_argument("--quality-csv", default=None, help="also write the quality table here")
    p.add_argument("--evals-csv", default=None, help="also write the evals table (one row per cell) here")
    p.add_argument("bench_files", nargs="+")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("reproduce", help="rerun a recorded cell exactly and say what differs (facts and figures)")
    p.add_argument("target", help="a cell dir (results/<sweep>/<cell>), a cell's W&B run id, or a cell id")
    p.add_argument("--results", default="results", help="where cell ids and run ids are looked up")
    p.add_argument("--check-only", action="store_true", help="only check the record against this machine; no rerun")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("compare", help="the same cells in two sweeps: per-metric changes beyond run-to-run noise")
    p.add_argument("sweep_a", help="a results dir, e.g. results/embedded")
    p.add_argument("sweep_b")
    p.add_argument("--ignore", action="append", default=[],
                   help="a config key (dotted) that may differ between aligned cells, besides the image")  # fmt: skip
    p.add_argument("--pair", help="compare A's cells of one option with B's of another: GROUP=A,B (quant=bf16,w4a16_gptq)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate of the noise tests (Holm)")
    p.add_argument("--markdown", help="also write the markdown here")
    p.add_argument("--html", help="also write an HTML page here")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("advise", help="acceptance process, step-cost fit, predicted t/s for every k, recommended config")
    p.add_argument("--sweep-dir", required=True, help="results/<sweep> (reads its table.csv)")
    p.add_argument("--out", default=None, help="advice JSON (default: <sweep-dir>/advice.json; .md next to it)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="the server's max batch: the schedule's last range ends there")
    p.set_defaults(func=cmd_advise)

    report = sub.add_parser("report", help="HTML/markdown reports and W&B runs for a results dir")
    report_sub = report.add_subparsers(dest="action", required=True)

    def report_parser(name: str, help: str) -> argparse.ArgumentParser:
        p = with_overrides(report_sub.add_parser(name, help=help))
        p.add_argument("--report-config", default=None, help="resolved report config (JSON); default: composed")
        return p

    p = report_parser("build", "report.html and tables.md from results/<sweep>/table.csv")
    p.add_argument("--sweep-dir", required=True)
    p.add_argument("--html", default=None)
    p.add_argument("--markdown", default=None)
    p.set_defaults(func=cmd_report_build)

    p = report_parser("wandb-cell", "log one cell as a W&B run (offline/online per report.wandb.mode)")
    p.add_argument("--cell-dir", required=True)
    p.add_argument("--receipt", default=None)
    p.add_argument("--force", action="store_true", help="log again even if nothing changed")
    p.set_defaults(func=cmd_report_wandb_cell)

    p = report_parser("wandb", "write the W&B report spec and log the sweep's aggregate run")
    p.add_argument("--sweep-dir", required=True)
    p.add_argument("--receipt", default=None)
    p.add_argument("--spec", default=None)
    p.add_argument("--cells", action="store_true", help="also log every cell's run (what the Snakemake rules do)")
    p.set_defaults(func=cmd_report_wandb_sweep)

    p = report_sub.add_parser("publish", help="save the written report spec to W&B (needs an API key)")
    p.add_argument("--sweep-dir", required=True)
    p.add_argument("--spec", default=None)
    p.add_argument("--entity", default=None)
    p.add_argument("--project", default=None)
    p.set_defaults(func=cmd_report_publish)
    return top


def main(argv: list[str] | None = None) -> None:
    from specsweep.serve.reaper import watch_owner

    signal.signal(signal.SIGTERM, _on_sigterm)
    args = parser().parse_args(argv)
    # A Snakemake job stops (through the SIGTERM handler above) when the run that started it is killed.
    watch_owner()
    try:
        args.func(args)
    except ConfigError as err:
        print(f"specsweep: config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OutputError as err:
        print(f"specsweep: {err.strerror}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
