"""What every command's parser shares: defaults shown in help, the Hydra overrides argument."""

from __future__ import annotations

import argparse


def command(sub: argparse._SubParsersAction, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help shows every default."""
    return sub.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                          **kwargs)  # fmt: skip


def with_overrides(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. drafter=ngram k=3")
    return p
