"""Start a vLLM server in its own process group, wait for /health, and always stop the whole group."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Callable

import httpx

from specsweep.config.secrets import server_environment
from specsweep.exit_status import describe_exit
from specsweep.serve.argv import ServerCommand

_PR_SET_PDEATHSIG = 1
# Resolved once in the parent: the child of a multi-threaded parent (Snakemake) must not dlopen between fork
# and exec, where a lock another thread held at fork time is never released.
try:
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except OSError:  # not glibc Linux: the servers still stop through the process-group kill
    _prctl = None


class ServerError(RuntimeError):
    pass


class PortInUse(ServerError):
    """Another process bound the server's port first (between choosing it and vLLM binding it)."""


_PORT_IN_USE = re.compile(r"\[Errno 98\]|Address already in use")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """Runs in the child before exec: if its parent is SIGKILLed, the kernel sends the child SIGTERM."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no server log)"


class VllmServer:
    """Context manager around one server lifetime; the log goes to `log_path`."""

    def __init__(
        self,
        command: ServerCommand,
        log_path: Path,
        startup_timeout_s: float,
        shutdown_timeout_s: float = 30,
        teardown: Callable[[], None] | None = None,
    ) -> None:
        self.command = command
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        # Stops what the server command started beyond its own process group (a container).
        self.teardown = teardown
        self.process: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.command.host}:{self.command.port}"

    def __enter__(self) -> "VllmServer":
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                self.command.argv,
                env=server_environment(dict(os.environ), list(self.command.forward_env), self.command.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a Ctrl-C in the terminal reaches specsweep, which then stops the group.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except FileNotFoundError as err:
            raise ServerError(f"cannot start the server: {err}; build the image first (build_image)") from err
        finally:
            log.close()
        self._started_at = time.monotonic()

    def wait_healthy(self) -> None:
        assert self.process is not None
        deadline = self._started_at + self.startup_timeout_s
        next_report = self._started_at + 15
        with httpx.Client(timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    if _PORT_IN_USE.search(log_tail(self.log_path, 20)):
                        raise PortInUse(f"port {self.command.port} on {self.command.host} is already in use")
                    raise ServerError(
                        f"vLLM exited before becoming healthy ({describe_exit(self.process.returncode)}); "
                        f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        self.startup_s = time.monotonic() - self._started_at
                        print(f"[serve] healthy after {self.startup_s:.0f} s at {self.base_url}", file=sys.stderr)
                        return
                except httpx.HTTPError:
                    pass
                now = time.monotonic()
                if now > deadline:
                    raise ServerError(
                        f"vLLM not healthy after {self.startup_timeout_s:.0f} s (serve.startup_timeout_s); "
                        f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                if now >= next_report:
                    print(f"[serve] waiting for /health: {now - self._started_at:.0f} s", file=sys.stderr)
                    next_report = now + 15
                time.sleep(1)

    def exit_code(self) -> int | None:
        """The server's exit code if it has died, else None (also None once stopped by us)."""
        return None if self.process is None else self.process.poll()

    def wait_exit(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the server to exit on its own; its exit code, or None if it still runs."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after the grace period."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.teardown is not None:
            self.teardown()
        pgid = process.pid  # start_new_session made the server its group leader
        _signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=self.shutdown_timeout_s)
        except subprocess.TimeoutExpired:
            pass
        # Engine-core workers can outlive the API process; the group still names them.
        _signal_group(pgid, signal.SIGKILL)
        process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
