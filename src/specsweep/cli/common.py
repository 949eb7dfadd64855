"""What every command's parser shares: defaults shown in help, the Hydra overrides argument."""

from __future__ import annotations

import argparse
from pathlib import Path


class UserError(Exception):
    """Input a command cannot use (a results dir that is not one, a path that does not exist), said with the fix."""


def sweep_results(path: str) -> Path:
    """A results/<sweep> dir that has its table (what advise and the reports read)."""
    sweep_dir = Path(path)
    if not (sweep_dir / "table.csv").is_file():
        what = "does not exist" if not sweep_dir.exists() else "has no table.csv"
        raise UserError(f"{sweep_dir} {what}: run the sweep first (`snakemake`; `specsweep run` measures cells only), "
                        "or pass the results dir of one that ran (e.g. results/embedded)")  # fmt: skip
    return sweep_dir


def command(sub: argparse._SubParsersAction, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help shows every default."""
    return sub.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                          **kwargs)  # fmt: skip


def with_overrides(p: argparse.ArgumentParser, help: str = "Hydra overrides, e.g. drafter=ngram k=3") -> argparse.ArgumentParser:
    p.add_argument("overrides", nargs="*", help=help)
    return p
