"""The Docker engine the container image kinds talk to: reach it, or start one on a machine that has none running.

On the DGX Spark the engine is the system's (systemd). On a CPU host with Debian's docker.io but no service (CI, this
project's test machines) `python -m specsweep.images.engine start` starts one as root the way these hosts allow:
no iptables and no bridge (containers use the host network), the vfs storage driver (no overlay mounts inside
the sandbox), its data root in specsweep's cache so built images survive across runs and clones. It listens on
the default socket, so the docker CLI and every specsweep job find it without DOCKER_HOST.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from specsweep.exit_status import describe_exit
from specsweep.paths import cache_dir

DEFAULT_SOCKET = Path("/var/run/docker.sock")
START_TIMEOUT_S = 60


class EngineError(RuntimeError):
    pass


def docker(*args: str, check: bool = True, timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """One docker CLI call, argv only; a failure names the command and docker's own message."""
    try:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    except FileNotFoundError as err:
        raise EngineError("the docker CLI is not installed; install Debian's docker.io (apt-get install docker.io)") from err
    if check and result.returncode != 0:
        raise EngineError(f"`docker {' '.join(args[:3])} ...` failed ({describe_exit(result.returncode)}): {result.stderr.strip()[-800:]}")
    return result


def reachable() -> bool:
    try:
        return docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20).returncode == 0
    except (EngineError, subprocess.TimeoutExpired):
        return False


def require_engine() -> None:
    if not reachable():
        raise EngineError(
            "the Docker engine is not reachable (`docker version` has no server); start it (`systemctl start docker`, "
            "or as root on a host without the service: `python -m specsweep.images.engine start`), or serve with "
            "image=vllm_cpu (no containers)"
        )


def data_root() -> Path:
    return cache_dir() / "docker"


def dockerd_argv(root: Path) -> list[str]:
    return [
        "dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--storage-driver=vfs",
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "dockerd.pid"),
        "-H", f"unix://{DEFAULT_SOCKET}",
    ]  # fmt: skip


def start_engine() -> int | None:
    """Start dockerd if no engine answers; returns its pid (None when one was already running)."""
    if reachable():
        return None
    if shutil.which("dockerd") is None:
        raise EngineError("dockerd is not installed; install Debian's docker.io (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise EngineError("starting dockerd needs root; run `sudo python -m specsweep.images.engine start`")
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "dockerd.log").open("ab")
    process = subprocess.Popen(dockerd_argv(root), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while not reachable():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (root / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
            raise EngineError("dockerd did not come up; its log ends:\n" + "\n".join(tail))
        time.sleep(0.5)
    return process.pid


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["start"]:
        print("usage: python -m specsweep.images.engine start", file=sys.stderr)
        return 2
    try:
        pid = start_engine()
    except EngineError as err:
        print(f"specsweep: {err}", file=sys.stderr)
        return 1
    print("docker engine already running" if pid is None else f"dockerd started (pid {pid}, data root {data_root()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
