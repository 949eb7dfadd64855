"""A full or unwritable results dir: a clear error naming the file and the fix; the previous output stays whole.

Both faults are real: the kernel's file-size limit (RLIMIT_FSIZE, EFBIG mid-write, as a full disk fails it) and a
read-only filesystem (a tmpfs mounted ro, or a read-only directory where the tests run unprivileged).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from report_inputs import make_sweep_dir

OLD_TABLE = "previous,complete,table\n1,2,3\n"


def aggregate(sweep_dir: Path, **popen) -> subprocess.CompletedProcess:
    bench = sorted(str(p) for p in sweep_dir.glob("*/bench.json"))
    argv = [sys.executable, "-m", "specsweep.cli", "job", "aggregate", "--csv", str(sweep_dir / "table.csv"),
            "--parquet", str(sweep_dir / "table.parquet"), *bench]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **popen)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_full_disk_fails_with_the_file_and_the_fix_and_keeps_the_old_table(tmp_path: Path) -> None:
    sweep_dir = make_sweep_dir(tmp_path / "results")
    (sweep_dir / "table.csv").write_text(OLD_TABLE)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    result = aggregate(sweep_dir, preexec_fn=small_files)
    assert result.returncode == 1, result.stderr
    assert f"cannot write {sweep_dir / 'table.csv'}: File too large; free space" in result.stderr
    assert "Traceback" not in result.stderr
    assert (sweep_dir / "table.csv").read_text() == OLD_TABLE
    assert not (sweep_dir / "table.parquet").exists()
    assert leftovers(sweep_dir) == []


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A directory nothing can be written to: a read-only tmpfs where mounting is allowed (root with
    CAP_SYS_ADMIN), a mode-0555 directory for other users; else sysfs, where no one may create files."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        yield target
        target.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True)
    if mounted.returncode != 0:
        yield Path("/sys")
        return
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_an_unwritable_results_dir_fails_with_the_file_and_the_fix(tmp_path: Path, read_only_dir: Path) -> None:
    sweep_dir = make_sweep_dir(tmp_path / "results")
    out = read_only_dir / "table.csv"
    bench = sorted(str(p) for p in sweep_dir.glob("*/bench.json"))
    result = subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "job", "aggregate", "--csv", str(out), "--parquet", str(read_only_dir / "t.parquet"), *bench],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot write {out}:" in result.stderr and f"make {read_only_dir} writable" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not [p for p in read_only_dir.iterdir() if p.name.startswith((".table.csv", "table.csv", "t.parquet"))]
