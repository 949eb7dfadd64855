"""The commands that plan and run sweeps: `config`, `cells`, `run`, `adapt`."""

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

from specsweep.cli.common import command, with_overrides
from specsweep.config.compose import cell_yaml, compose_cell, config_hash


def cmd_config(args: argparse.Namespace) -> None:
    from specsweep.config.grid import check_k_has_a_drafter, readable_id
    from specsweep.images.base import LaunchSpec, backend_of, unsupported_reason
    from specsweep.models.prepare import model_location
    from specsweep.serve.speculative import cell_speculative_config

    overrides = [*([f"sweep={args.sweep}"] if args.sweep else []), *args.overrides]
    composed = compose_cell(overrides)
    cell = composed.cell
    check_k_has_a_drafter(overrides, [cell])
    print(f"# cell {readable_id(composed)}  (config hash {config_hash(cell)[:12]})")
    print(cell_yaml(cell), end="")
    kind = backend_of(cell.image)
    image = kind.preview()
    port = cell.serve.port or 8000
    location = {"none": model_location(cell.model), "hub": getattr(cell.quant, "repo_id", "")}.get(cell.quant.kind)
    if location is None:
        location = f"<{cell.model.name}-{cell.quant.name} checkpoint>"
        print(f"\n# {location}: built by the quantize stage (`specsweep job quantize`); its path is in results/_quants/")
    if reason := unsupported_reason(cell, image):
        print(f"\n# skipped on this host (recorded as skipped, never served): {reason}")
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
    from specsweep.images.base import backend_of, unsupported_reason
    from specsweep.report.progress import progress

    # Hydra composes every combination first (a tenth of a second or more each): say so at once, with a bar on a
    # terminal, so a long axis never looks hung.
    shown = " ".join(args.overrides)
    print(f"[cells] expanding sweep {args.sweep or '(default)'}{' with ' + shown if shown else ''}", file=sys.stderr,
          flush=True)  # fmt: skip
    previews = {}
    for cell in expand(args.overrides, args.sweep, progress if sys.stderr.isatty() else None):
        image = cell.config.image
        if image.name not in previews:
            previews[image.name] = backend_of(image).preview()
        reason = unsupported_reason(cell.config, previews[image.name])
        skipped = f"\t(skipped here: {reason})" if reason else ""
        print(f"{cell.sweep}/{cell.id}\t{' '.join(cell.overrides)}{skipped}", flush=True)


def snakemake_config(overrides: list[str], sweep: str | None) -> dict:
    """The Snakemake config of a run: what `--config` takes (overrides="...", sweep=NAME)."""
    return {"overrides": list(overrides), **({"sweep": sweep} if sweep else {})}


@contextlib.contextmanager
def snakemake_argv(overrides: list[str], sweep: str | None, extra: list[str], prefix: str):
    """Snakemake's argv with the overrides in a config file, not `--config overrides="..."`: Snakemake re-parses
    --config values, which mangles quotes and brackets in overrides (e.g. bench.workloads=[{...}]); a YAML list
    reaches the plan item by item. The file lives while the context does."""
    import tempfile

    import yaml

    from specsweep.paths import project_root

    config = snakemake_config(overrides, sweep)
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
        config = {**snakemake_config(args.overrides, args.sweep), "overrides": " ".join(args.overrides)}
        given = [f"{key}={value}" for key, value in config.items() if value]
        rebuild = shlex.join(["snakemake", *(["--config", *given] if given else [])])
        print(f"[run] measuring {len(cells)} cells (each cell's bench.json, and what it needs); the sweep's table and "
              f"reports are not rebuilt: `{rebuild}` rebuilds them from every measured cell", file=sys.stderr)  # fmt: skip
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


def register(sub: argparse._SubParsersAction) -> None:
    p = with_overrides(command(sub, "config", "print the resolved cell config and its vLLM argv"))
    p.add_argument("--sweep", help="sweep option under conf/sweep (default: from conf/config.yaml)")
    p.set_defaults(func=cmd_config)

    p = with_overrides(command(sub, "cells", "list the cells a sweep (with overrides) expands to"))
    p.add_argument("--sweep", help="sweep option under conf/sweep (default: from conf/config.yaml)")
    p.set_defaults(func=cmd_cells)

    for name, help, func in (
        ("run", "run the cells matching the overrides through Snakemake", cmd_run),
        ("adapt", "an adaptive sweep: measure few k, predict, confirm the best", cmd_adapt),
    ):
        p = with_overrides(command(sub, name, help))
        p.add_argument("--sweep", help="sweep option under conf/sweep (default: from conf/config.yaml)")
        p.add_argument("--snakemake-args", default="", type=shlex.split, help="extra Snakemake flags, quoted")
        p.set_defaults(func=func)
