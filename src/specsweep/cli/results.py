"""The commands that read results: `advise`, `compare`, `reproduce`, `report build | wandb | publish`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specsweep.cli.common import UserError, command, sweep_results, with_overrides
from specsweep.config.compose import compose_cell


def cmd_advise(args: argparse.Namespace) -> None:
    from specsweep.advise.advice import advise_sweep_dir, markdown
    from specsweep.atomic import write_json, write_text

    sweep_dir = sweep_results(args.sweep_dir)
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


REPORT_OVERRIDES = "report.* overrides only (the table is measured), e.g. report.html.dpi=150 report.wandb.mode=offline"


def report_cfg(args: argparse.Namespace):
    """The sweep's report config: as the Snakefile resolved it (--report-config), else composed from overrides."""
    from specsweep.config.schema import ReportCfg

    if args.report_config:
        return ReportCfg.model_validate_json(args.report_config)
    # The table is measured already: only how it is reported can change here.
    ignored = [o for o in args.overrides if not o.lstrip("+~").startswith("report.")]
    if ignored:
        raise UserError(f"only report.* overrides apply to a measured table, not {' '.join(ignored)}; to measure other "
                        "cells: snakemake --config overrides=\"...\" (or specsweep run ...)")  # fmt: skip
    return compose_cell(args.overrides).report


def cmd_report_build(args: argparse.Namespace) -> None:
    from specsweep.atomic import write_text
    from specsweep.report import html, markdown
    from specsweep.report.data import load_sweep
    from specsweep.report.figures import FIGURES
    from specsweep.report.progress import progress

    sweep_dir = sweep_results(args.sweep_dir)
    cfg = report_cfg(args)
    data = load_sweep(sweep_dir)
    html_path = Path(args.html or sweep_dir / "report.html")
    md_path = Path(args.markdown or sweep_dir / "tables.md")
    with progress("figures", len(FIGURES)) as advance:
        write_text(html_path, html.render(data, dpi=cfg.html.dpi, progress=advance))
    write_text(md_path, markdown.render(data) + "\n")
    print(f"[report] {html_path} and {md_path}", file=sys.stderr)


def cmd_report_wandb_sweep(args: argparse.Namespace) -> None:
    from specsweep.report.data import load_sweep
    from specsweep.report.progress import progress
    from specsweep.report.wandb_report import write_spec
    from specsweep.report.wandb_runs import log_cell, log_sweep

    sweep_dir = sweep_results(args.sweep_dir)
    cfg = report_cfg(args).wandb
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
    where = f" at {(sweep_dir / receipt.run_dir).resolve()} (`wandb sync` that path)" if receipt.run_dir else ""
    print(f"[wandb] sweep: {receipt.mode_used} run {receipt.run_id}{where}", file=sys.stderr)


def cmd_report_publish(args: argparse.Namespace) -> None:
    from specsweep.report.wandb_report import PublishError, publish

    spec = Path(args.spec or Path(args.sweep_dir) / "wandb_report.json")
    if not spec.is_file():
        raise SystemExit(f"specsweep report publish: {spec} does not exist; run the sweep (or `report wandb`) first")
    try:
        print(publish(spec, entity=args.entity, project=args.project))
    except PublishError as err:
        raise SystemExit(f"specsweep report publish: {err}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "advise", "acceptance process, step-cost fit, predicted t/s for every k, recommended config")
    advise_arguments(p)
    p.set_defaults(func=cmd_advise)

    p = command(sub, "reproduce", "rerun a recorded cell exactly and say what differs (facts and figures)")
    p.add_argument("target", help="a cell dir (results/<sweep>/<cell>), a cell's W&B run id, or a cell id")
    p.add_argument("--results", default="results", help="where cell ids and run ids are looked up")
    p.add_argument("--check-only", action="store_true", help="only check the record against this machine; no rerun")
    p.set_defaults(func=cmd_reproduce)

    p = command(sub, "compare", "the same cells in two sweeps: per-metric changes beyond run-to-run noise")
    p.add_argument("sweep_a", help="a results dir, e.g. results/embedded")
    p.add_argument("sweep_b", help="the results dir to compare with it")
    p.add_argument("--ignore", action="append", default=[],
                   help="a config key (dotted) that may differ between aligned cells, besides the image")  # fmt: skip
    p.add_argument("--pair", help="compare A's cells of one option with B's of another: GROUP=A,B (quant=bf16,w4a16_gptq)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate of the noise tests (Holm)")
    p.add_argument("--markdown", help="also write the markdown here")
    p.add_argument("--html", help="also write an HTML page here")
    p.set_defaults(func=cmd_compare)

    report = command(sub, "report", "HTML/markdown reports and W&B runs for a results dir")
    report_sub = report.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = with_overrides(command(report_sub, "build", "report.html and tables.md from results/<sweep>/table.csv"),
                       REPORT_OVERRIDES)
    report_build_arguments(p)
    p.set_defaults(func=cmd_report_build)
    p = with_overrides(command(report_sub, "wandb", "write the W&B report spec and log the sweep's aggregate run "
                                                    "(offline/online per report.wandb.mode)"), REPORT_OVERRIDES)  # fmt: skip
    report_wandb_arguments(p)
    p.add_argument("--cells", action="store_true", help="also log every cell's run (what the Snakemake rules do)")
    p.set_defaults(func=cmd_report_wandb_sweep)
    p = command(report_sub, "publish", "save the written report spec to W&B (needs an API key)")
    p.add_argument("--sweep-dir", required=True, help="results/<sweep>")
    p.add_argument("--spec", default=None, help="the report spec (none: <sweep-dir>/wandb_report.json)")
    p.add_argument("--entity", default=None, help="W&B entity (none: WANDB_ENTITY, the spec's, the key's default)")
    p.add_argument("--project", default=None, help="W&B project (none: WANDB_PROJECT, the spec's)")
    p.set_defaults(func=cmd_report_publish)


def advise_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep-dir", required=True, help="results/<sweep> (reads its table.csv)")
    p.add_argument("--out", default=None, help="advice JSON (none: <sweep-dir>/advice.json; .md next to it)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="the server's max batch: the schedule's last range ends there")


def report_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-config", default=None, help="resolved report config (JSON); none: composed from the overrides")


def report_build_arguments(p: argparse.ArgumentParser) -> None:
    report_config_argument(p)
    p.add_argument("--sweep-dir", required=True, help="results/<sweep>")
    p.add_argument("--html", default=None, help="none: <sweep-dir>/report.html")
    p.add_argument("--markdown", default=None, help="none: <sweep-dir>/tables.md")


def report_wandb_arguments(p: argparse.ArgumentParser) -> None:
    report_config_argument(p)
    p.add_argument("--sweep-dir", required=True, help="results/<sweep>")
    p.add_argument("--receipt", default=None, help="the sweep run's receipt (none: <sweep-dir>/wandb.json)")
    p.add_argument("--spec", default=None, help="the report spec (none: <sweep-dir>/wandb_report.json)")
