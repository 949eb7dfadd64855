"""Find and stop what a killed run left behind: orphaned servers and jobs, and Snakemake's stale lock.

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
import threading
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


def mark_run(workdir: Path) -> None:
    """Called in the main Snakemake process: every job it starts (in a thread of it with the workflow profile's
    force-use-threads, else in a child `snakemake` process) inherits this run's markers, naming the main process as
    the owner."""
    os.environ.update(run_markers(workdir, os.getpid()))


def watch_owner(poll_s: float = 1.0) -> None:
    """In a job: SIGTERM ourselves once the run that started us is gone (SIGKILLed Snakemake), so the job stops
    its server the way it does on any SIGTERM instead of running on unowned. The kernel's parent-death signal
    cannot do this: the job's parent may be a per-job child `snakemake` process (a run without force-use-threads),
    which outlives the main one."""
    token = os.environ.get(OWNER_ENV)
    if not token:
        return

    def watch() -> None:
        while owner_alive(token):
            time.sleep(poll_s)
        print("specsweep: the Snakemake run that started this job is gone; stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def owner_alive(token: str) -> bool:
    """Whether the process named by `pid:start-time` still runs; a killed one not yet reaped (a zombie) is dead."""
    try:
        process = psutil.Process(int(token.split(":")[0]))
        return f"{process.pid}:{process.create_time():.2f}" == token and process.status() != psutil.STATUS_ZOMBIE
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
        if environ.get(WORKDIR_ENV) != workdir or owner_alive(environ.get(OWNER_ENV, "")):
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


def _other_snakemakes(workdir: Path) -> list[int]:
    """Live Snakemake processes working in `workdir`, other than this one and its ancestors."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.info["pid"] in mine or not any("snakemake" in part for part in process.info["cmdline"] or []):
                continue
            if Path(process.cwd()).resolve() == workdir:
                found.append(process.info["pid"])
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def remove_stale_lock(workdir: Path) -> bool:
    """Snakemake's lock outlives a SIGKILLed run, and the next run then stops with "Directory cannot be locked".
    A lock no live Snakemake in this directory holds is stale: remove it (what `snakemake --unlock` does)."""
    workdir = Path(workdir).resolve()
    locks = [p for p in (workdir / ".snakemake" / "locks").glob("*.lock")]
    if not locks or _other_snakemakes(workdir):
        return False
    for lock in locks:
        lock.unlink(missing_ok=True)
    print(f"specsweep: removed Snakemake's lock in {workdir} left by a run that was killed (no Snakemake runs here)",
          file=sys.stderr)  # fmt: skip
    return True
