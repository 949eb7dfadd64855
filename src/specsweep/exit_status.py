"""What a child process's exit status means, in words a user can act on.

A process killed by a signal prints nothing of its own: a build log or a probe's stderr then ends mid-line, and
"exit 132" or "exit -4" alone tells nobody that the CPU lacked an instruction. Python's subprocess reports a signal as
a negative status; a shell, `docker run`/`docker exec` and qemu-user report it as 128 + the signal's number.
"""

from __future__ import annotations

import signal

# Why each signal usually kills a build, probe or server here, and what to do about it.
MEANINGS = {
    signal.SIGILL: "Illegal instruction: this build needs CPU features the host lacks (e.g. AVX-512 code on an "
    "AVX2-only CPU); use the build variant made for this CPU",
    signal.SIGSEGV: "Segmentation fault: native code crashed (a library bug, or a library built for another version "
    "or CPU); see the log above for the last step that ran",
    signal.SIGBUS: "Bus error: a memory-mapped file changed or vanished under the process, or the disk or /dev/shm "
    "is full",
    signal.SIGFPE: "Floating-point exception in native code (an integer division by zero)",
    signal.SIGABRT: "Aborted: a native library hit a fatal error and stopped the process; its message is above",
    signal.SIGKILL: "Killed: often the kernel's out-of-memory killer (see `dmesg`); lower memory use or free RAM",
    signal.SIGTERM: "Terminated: something asked it to stop (a timeout, Ctrl-C, or another process)",
    signal.SIGINT: "Interrupted (Ctrl-C)",
}


def signal_of(returncode: int) -> signal.Signals | None:
    """The signal that ended the process, if its status says one did."""
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 128 + 65 else 0
    try:
        return signal.Signals(number) if number else None
    except ValueError:
        return None


def describe_exit(returncode: int) -> str:
    """`exit 1`, or `killed by SIGILL (exit 132): Illegal instruction: ...` when a signal ended it."""
    found = signal_of(returncode)
    if found is None:
        return f"exit {returncode}"
    meaning = MEANINGS.get(found, signal.strsignal(found) or found.name)
    return f"killed by {found.name} (exit {returncode}): {meaning}"
