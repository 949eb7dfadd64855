"""The `specsweep` command, split by audience.

People type the commands in `sweep` (config, cells, run, adapt), `bench` and `results` (advise, compare,
reproduce, report build / wandb / publish). Snakemake's rules call the job entry points in `jobs`, under
`specsweep job ...` (hidden from the top-level help): the job's config and its input records in, a record out.
"""

from __future__ import annotations

import argparse
import signal
import sys

from specsweep import __version__
from specsweep.atomic import OutputError
from specsweep.cli import bench, jobs, results, sweep
from specsweep.cli.common import UserError
from specsweep.config.compose import ConfigError
from specsweep.records.base import RecordError


def _on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM (Snakemake cancelling a job) into SystemExit so every `finally` stops its server.
    raise SystemExit(128 + signum)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="specsweep", description="Speculative-decoding sweeps with vLLM.")
    top.add_argument("--version", action="version", version=f"specsweep {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (sweep, bench, results):
        module.register(sub)
    jobs.register(sub)
    return top


def main(argv: list[str] | None = None) -> None:
    from specsweep.serve.reaper import watch_owner

    signal.signal(signal.SIGTERM, _on_sigterm)
    if not (sys.argv[1:] if argv is None else argv):
        parser().print_help()
        return
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
    except (RecordError, UserError) as err:
        print(f"specsweep: {err}", file=sys.stderr)
        raise SystemExit(1) from None
