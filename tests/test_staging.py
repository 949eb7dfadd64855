"""Stage-then-rename: a cache path that exists is a finished build, and no build leaves its staging dir behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from specsweep import staging
from specsweep.cache_check import reusable
from specsweep.staging import HOST, remove_stale, staged_dir


def siblings(final: Path) -> list[str]:
    return sorted(path.name for path in final.parent.iterdir())


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_success_renames_into_place(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with staged_dir(final) as where:
        assert where.parent == final.parent and where.name.startswith(f"entry.staging-{HOST}-{os.getpid()}-")
        assert not final.exists()
        (where / "file").write_text("built")
    assert (final / "file").read_text() == "built"
    assert siblings(final) == ["entry"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_any_exception_removes_the_staging_dir(tmp_path: Path, error: type[BaseException]) -> None:
    final = tmp_path / "entry"
    with pytest.raises(error):
        with staged_dir(final) as where:
            (where / "half").write_text("half")
            raise error()
    assert siblings(final) == []


def test_a_build_published_first_by_another_process_is_kept(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with staged_dir(final) as where:
        (where / "file").write_text("ours")
        final.mkdir()
        (final / "file").write_text("theirs")
    assert (final / "file").read_text() == "theirs"
    assert siblings(final) == ["entry"]


def test_leftovers_of_a_dead_builder_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    dead = dead_pid()
    stale = tmp_path / f"entry.staging-{HOST}-{dead}-0123abcd"
    stale_side_file = tmp_path / f"entry.staging-{HOST}-{dead}-0123abcd.spec.json"
    stale_discarded = tmp_path / f"entry.discarded-{HOST}-{dead}-89abcdef"
    live = tmp_path / f"entry.staging-{HOST}-{os.getppid()}-0123abcd"
    other_host = tmp_path / f"entry.staging-{HOST}x-{dead}-0123abcd"
    other_entry = tmp_path / f"entry2.staging-{HOST}-{dead}-0123abcd"
    for path in (stale, stale_discarded, live, other_host, other_entry):
        path.mkdir()
        (path / "x").write_text("x")
    stale_side_file.write_text("{}")

    with staged_dir(final) as where:
        (where / "file").write_text("built")

    assert not stale.exists() and not stale_side_file.exists() and not stale_discarded.exists()
    assert live.is_dir() and other_host.is_dir() and other_entry.is_dir()
    assert remove_stale(final) == []


def test_a_sigkilled_build_leaves_nothing_after_the_next_use(tmp_path: Path) -> None:
    final = tmp_path / "cache" / "entry"
    builder = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from specsweep.staging import staged_dir

        with staged_dir(Path({str(final)!r})) as where:
            (where / "weights").write_bytes(b"0" * 4096)
            print(where, flush=True)
            time.sleep(120)
        """
    )
    with subprocess.Popen([sys.executable, "-c", builder], stdout=subprocess.PIPE, text=True) as child:
        try:
            where = Path(child.stdout.readline().strip())
            assert where.is_dir(), "the builder never reported its staging dir"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()  # reaped: a zombie's pid would still look alive
    # SIGKILL runs no cleanup: the staging dir is still there, and nothing looks like a finished entry.
    assert where.is_dir() and not final.exists()

    assert not reusable(final)
    assert siblings(final) == []


def test_discard_frees_the_path_at_once(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    final.mkdir()
    (final / "bad").write_text("bad")
    staging.discard(final)
    assert siblings(final) == []
    staging.discard(final)  # already gone: nothing to do
