"""Find and stop what a killed run left behind.

Every job a workflow run starts (and so every vLLM server a cell job starts) carries two environment markers:
the run's working directory and its owner, the Snakemake process as `pid:start-time`. A process whose owner no
longer exists is an orphan: its run was SIGKILLed (or crashed) before it could stop it. The next run in the same
directory stops orphans before starting anything, so a leftover server never holds the memory, cores or port a
new cell is about to be timed with.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

WORKDIR_ENV = "SPECSWEEP_WORKDIR"
OWNER_ENV = "SPECSWEEP_RUN_OWNER"


def owner_token(pid: int) -> str:
    """`pid:start-time`: a recycled pid is a different process."""
    return f"{pid}:{psutil.Process(pid).create_time():.2f}"


def run_markers(workdir: Path, owner_pid: int) -> dict[str, str]:
    return {WORKDIR_ENV: str(Path(workdir).resolve()), OWNER_ENV: owner_token(owner_pid)}


def _alive(token: str) -> bool:
    pid, _, started = token.partition(":")
    try:
        return owner_token(int(pid)) == token
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


@dataclass(frozen=True)
class Orphan:
    pid: int
    command: str
    cell_dir: str | None


def find_orphans(workdir: Path) -> list[Orphan]:
    workdir = str(Path(workdir).resolve())
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            environ = process.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if environ.get(WORKDIR_ENV) != workdir or _alive(environ.get(OWNER_ENV, "")):
            continue
        command = " ".join(process.info["cmdline"] or [])[:160]
        found.append(Orphan(process.info["pid"], command, environ.get("SPECSWEEP_CELL_DIR")))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    """The process's whole group when it leads one (a vLLM server and its engine workers), else the process."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap_orphans(workdir: Path, grace_s: float = 10) -> list[Orphan]:
    """Stop every orphan of an earlier run in `workdir`: SIGTERM, then SIGKILL what is left after `grace_s`."""
    orphans = find_orphans(workdir)
    for orphan in orphans:
        where = f" (cell {Path(orphan.cell_dir).name})" if orphan.cell_dir else ""
        print(f"specsweep: stopping pid {orphan.pid}{where} left by a run that was killed: {orphan.command}",
              file=sys.stderr)  # fmt: skip
        _signal(orphan.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while orphans and time.monotonic() < deadline and any(psutil.pid_exists(o.pid) for o in orphans):
        time.sleep(0.2)
    for orphan in orphans:
        # A stopped (SIGSTOPped, hung) process never acts on SIGTERM; SIGKILL takes it regardless.
        _signal(orphan.pid, signal.SIGKILL)
    return orphans
