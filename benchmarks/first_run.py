"""Where does README command 1's time go? A per-step profile of an embedded sweep run.

    .venv/bin/python benchmarks/first_run.py --run               # fresh clone, this cache: README command 1, profiled
    .venv/bin/python benchmarks/first_run.py --run --cold        # ... with an empty specsweep cache (builds everything)
    .venv/bin/python benchmarks/first_run.py PROJECT_DIR         # profile a run that already happened there

--run clones this checkout into a temporary directory and runs README command 1 there exactly (venv, install,
snakemake), timing the install; --cold points SPECSWEEP_CACHE at an empty directory (pip's own cache stays, as on a
machine that has installed Python packages before). The profile is read from Snakemake's log (1 s resolution): each
job's wall time, the sum per rule, and the steps on the critical path (the run executes one job at a time where
they hold the model_server resource). It prints the host's CPU next to the figures: they mean nothing without it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOB = re.compile(r"^\s+jobid: (\d+)$")
OUTPUT = re.compile(r"^\s+output: (.*)$")
DONE = re.compile(r"^Finished jobid: (\d+)")


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text(errors="replace")
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    isa = "AVX-512 + bf16" if {"avx512f", "avx512_bf16"} <= flags else "AVX-512" if "avx512f" in flags else (
        "AVX2 only" if "avx2" in flags else "no AVX2")
    return f"{model.group(1).strip() if model else 'unknown CPU'}, {os.cpu_count()} cores, {isa}"


def jobs(log: Path) -> list[tuple[str, str, datetime, datetime]]:
    """(rule, first output, start, end) of every finished job in a Snakemake log."""
    started: dict[str, tuple[str, str, datetime]] = {}
    finished = []
    stamp = rule = output = None
    for line in log.read_text(errors="replace").splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := RULE.match(line):
            rule, output = match.group(1), ""
        elif (match := OUTPUT.match(line)) and rule:
            output = match.group(1).split(",")[0]
        elif (match := JOB.match(line)) and rule:
            started[match.group(1)] = (rule, output, stamp)
            rule = None
        elif (match := DONE.match(line)) and match.group(1) in started:
            name, out, start = started.pop(match.group(1))
            finished.append((name, out, start, stamp))
    return finished


def profile(project: Path) -> None:
    logs = sorted((project / ".snakemake/log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"no Snakemake log under {project}/.snakemake/log: run the sweep there first")
    done = jobs(logs[-1])
    if not done:
        raise SystemExit(f"{logs[-1]} has no finished job")
    first, last = min(j[2] for j in done), max(j[3] for j in done)
    print(f"# per-step profile of {logs[-1].name} ({cpu()})\n")
    print("| step | output | start (s) | wall (s) |\n|---|---|---:|---:|")
    for rule, output, start, end in sorted(done, key=lambda j: (j[2], j[3])):
        print(f"| {rule} | {output} | {(start - first).total_seconds():.0f} | {(end - start).total_seconds():.0f} |")
    per_rule: dict[str, list[float]] = defaultdict(list)
    for rule, _, start, end in done:
        per_rule[rule].append((end - start).total_seconds())
    print("\n| rule | jobs | total (s) | longest (s) |\n|---|---:|---:|---:|")
    for rule, seconds in sorted(per_rule.items(), key=lambda item: -sum(item[1])):
        print(f"| {rule} | {len(seconds)} | {sum(seconds):.0f} | {max(seconds):.0f} |")
    print(f"\nSnakemake wall time, first job start to last job end: {(last - first).total_seconds():.0f} s")


def run(cold: bool) -> Path:
    where = Path(tempfile.mkdtemp(prefix="specsweep-first-run-"))
    project = where / "specsweep"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    env = dict(os.environ)
    if cold:
        env["SPECSWEEP_CACHE"] = str(where / "cache")
    steps = [
        ("venv", [sys.executable, "-m", "venv", ".venv"]),
        ("pip install -e .", [".venv/bin/pip", "install", "-q", "-e", "."]),
        ("snakemake", [".venv/bin/snakemake"]),
    ]
    for what, argv in steps:
        started = time.monotonic()
        print(f"[first-run] {what} ...", file=sys.stderr, flush=True)
        code = subprocess.run(argv, cwd=project, env=env).returncode
        print(f"[first-run] {what}: {time.monotonic() - started:.0f} s (exit {code})", file=sys.stderr, flush=True)
        if code != 0:
            raise SystemExit(f"{what} failed (exit {code}) in {project}")
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", help="a project dir where the sweep ran (default with --run: a fresh clone)")
    parser.add_argument("--run", action="store_true", help="clone this checkout and run README command 1 in it first")
    parser.add_argument("--cold", action="store_true", help="with --run: an empty specsweep cache")
    args = parser.parse_args()
    if args.run == bool(args.project):
        parser.error("give a PROJECT_DIR or --run")
    profile(run(args.cold) if args.run else Path(args.project))


if __name__ == "__main__":
    main()
