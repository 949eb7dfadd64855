"""The Docker engine specsweep starts on hosts without the service: which storage driver it asks dockerd for."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from chromium import NON_ROOT, non_root_user, require_root

from specsweep.docker_engine import dockerd_argv, overlay_mounts, storage_drivers

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_module_needs_only_the_standard_library() -> None:
    """.ci/run starts the engine with the system Python before any venv exists: no site-packages here (-S)."""
    result = subprocess.run([sys.executable, "-S", "-c", "import specsweep.docker_engine"], capture_output=True,
                            text=True, timeout=60, env={"PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_overlay2_is_tried_first_only_where_overlayfs_mounts() -> None:
    assert storage_drivers(overlay_ok=True) == ["overlay2", "vfs"]
    assert storage_drivers(overlay_ok=False) == ["vfs"]
    argv = dockerd_argv(Path("/cache/docker"), "overlay2")
    assert "--storage-driver=overlay2" in argv and argv[argv.index("--data-root") + 1] == "/cache/docker/data"


def test_the_overlay_probe_mounts_for_real_and_leaves_nothing(tmp_path: Path) -> None:
    require_root()
    # This host (an ext4 root) mounts overlayfs; the probe's own read-back through the mount is what says so.
    assert overlay_mounts(tmp_path) is True
    assert list(tmp_path.iterdir()) == []
    assert str(tmp_path) not in Path("/proc/mounts").read_text()


def test_the_overlay_probe_says_no_where_mounting_is_not_allowed() -> None:
    """As a user without CAP_SYS_ADMIN the mount fails: the probe answers False (and dockerd gets vfs), no error."""
    user = non_root_user()
    # The engine module needs only the standard library: a world-readable copy of it runs under the system Python.
    where = Path(tempfile.mkdtemp(prefix="specsweep-engine-"))
    try:
        package = where / "specsweep"
        package.mkdir()
        for name in ("__init__.py", "docker_engine.py", "exit_status.py", "paths.py"):
            shutil.copy(ROOT / "src/specsweep" / name, package / name)
        (where / "probe").mkdir()
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(where)], check=True)
        where.chmod(0o755)
        program = f"from pathlib import Path; from specsweep.docker_engine import overlay_mounts; print(overlay_mounts(Path('{where}/probe')))"
        result = subprocess.run(["runuser", "-u", NON_ROOT, "--", "env", f"PYTHONPATH={where}", "python3", "-c", program],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "False"
    finally:
        shutil.rmtree(where, ignore_errors=True)
