"""How soon does `specsweep cells` say something, and how long does it take? (issue: a long axis must never look hung)

    .venv/bin/python benchmarks/cli_latency.py                      # specsweep cells "k=range(1,8)", 3 times
    .venv/bin/python benchmarks/cli_latency.py --repeat 5 k=2,4     # other overrides

Prints, per run, the seconds to the first byte on stdout or stderr and to the end, with the cells listed and the
host's CPU (the figures mean nothing without it).
"""

from __future__ import annotations

import argparse
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import cpu  # noqa: E402


def one_run(overrides: list[str]) -> tuple[float, float, int]:
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "specsweep.cli", "cells", *overrides], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    first = None
    out = b""
    with selectors.DefaultSelector() as selector:
        for stream in (child.stdout, child.stderr):
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                first = first if first is not None else time.monotonic() - started
                if key.fileobj is child.stdout:
                    out += chunk
    if child.wait() != 0:
        raise SystemExit(f"specsweep cells {' '.join(overrides)} failed (exit {child.returncode})")
    return first or 0.0, time.monotonic() - started, len(out.decode().splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["k=range(1,8)"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"host: {cpu()}")
    for run in range(1, args.repeat + 1):
        first, total, cells = one_run(args.overrides)
        print(f"run {run}: specsweep cells {' '.join(args.overrides)}: first output {first:.2f} s, done {total:.2f} s, "
              f"{cells} cells")


if __name__ == "__main__":
    main()
