"""What a killed run leaves behind is found by its markers and stopped; a live run's processes and lock are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from specsweep.serve.reaper import OWNER_ENV, WORKDIR_ENV, find_orphans, owner_token, reap_orphans, remove_stale_lock


def dead_owner() -> str:
    """The token of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    token = owner_token(process.pid)
    process.wait()
    return token


def marked(workdir: Path, owner: str, *, ignore_term: bool = False) -> subprocess.Popen:
    code = "import signal, time\n"
    if ignore_term:  # a hung server: SIGTERM does nothing
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(120)\n"
    env = {**os.environ, WORKDIR_ENV: str(workdir.resolve()), OWNER_ENV: owner}
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)


def gone(process: subprocess.Popen, within_s: float = 15) -> bool:
    try:
        process.wait(timeout=within_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_orphans_of_a_dead_run_are_stopped_even_when_they_ignore_sigterm(tmp_path: Path) -> None:
    orphan = marked(tmp_path, dead_owner())
    hung = marked(tmp_path, dead_owner(), ignore_term=True)
    time.sleep(0.5)
    assert {o.pid for o in find_orphans(tmp_path)} == {orphan.pid, hung.pid}
    reaped = reap_orphans(tmp_path, grace_s=2)
    assert {o.pid for o in reaped} == {orphan.pid, hung.pid}
    assert gone(orphan) and gone(hung)
    assert hung.returncode == -signal.SIGKILL


def test_processes_of_a_live_run_or_another_directory_are_left_alone(tmp_path: Path) -> None:
    live = marked(tmp_path, owner_token(os.getpid()))
    elsewhere = marked(tmp_path / "other", dead_owner())
    try:
        time.sleep(0.5)
        assert find_orphans(tmp_path) == [] and reap_orphans(tmp_path) == []
        assert live.poll() is None
    finally:
        for process in (live, elsewhere):
            process.kill()
            process.wait()


def test_a_killed_owner_not_yet_reaped_counts_as_dead(tmp_path: Path) -> None:
    owner = subprocess.Popen(["sleep", "60"])
    token = owner_token(owner.pid)
    child = marked(tmp_path, token)
    try:
        time.sleep(0.5)
        assert find_orphans(tmp_path) == []
        owner.kill()
        time.sleep(0.5)  # a zombie now: its parent (this test) has not waited for it
        assert psutil.Process(owner.pid).status() == psutil.STATUS_ZOMBIE
        assert [o.pid for o in find_orphans(tmp_path)] == [child.pid]
    finally:
        owner.wait()
        child.kill()
        child.wait()


def lock(workdir: Path) -> Path:
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text(str(workdir / "results/x") + "\n")
    return locks / "0.input.lock"


def test_a_lock_no_snakemake_holds_is_removed(tmp_path: Path) -> None:
    held = lock(tmp_path)
    assert remove_stale_lock(tmp_path)
    assert not held.exists()


def test_a_lock_of_a_running_snakemake_in_the_directory_is_kept(tmp_path: Path) -> None:
    held = lock(tmp_path)
    # A process named snakemake working in the directory, as a live run is.
    running = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 60"], cwd=tmp_path)
    try:
        time.sleep(0.5)
        assert not remove_stale_lock(tmp_path)
        assert held.exists()
    finally:
        running.kill()
        running.wait()
