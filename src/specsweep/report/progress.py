"""Progress for long report steps: a live bar on a terminal, one line per item in a log file.

Snakemake jobs write to per-job log files (not a TTY), where a redrawn bar would flood the log.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[str], None]]:
    if not sys.stderr.isatty():
        done = 0

        def plain(item: str) -> None:
            nonlocal done
            done += 1
            print(f"[{description}] {done}/{total} {item}", file=sys.stderr, flush=True)

        yield plain
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[item]}"))  # fmt: skip
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total, item="")

        def advance(item: str) -> None:
            bar.update(task, advance=1, item=item)

        yield advance
