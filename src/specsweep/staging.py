"""Build a cache entry aside and rename it into place, so a path that exists is always a finished build.

Staging dirs sit next to the entry as `<entry>.staging-<host>-<pid>-<token>`. A build that dies without running
any cleanup (SIGKILL, the OOM killer, a SIGTERM from a scheduler, power loss) leaves one behind; the pid lets the
next build or use of the same entry tell that its builder is gone and remove it. The host keeps that from touching
builds running on other machines that share the cache (the slurm profile); the token keeps two builds of one
process apart.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Dots would make `<entry>.staging-...` ambiguous to read back; hostnames rarely have anything else odd.
HOST = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname().split(".")[0]) or "host"


def _aside(path: Path, purpose: str) -> Path:
    return path.with_name(f"{path.name}.{purpose}-{HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _leftover(final: Path, name: str) -> int | None:
    """The pid that made `name` if it is a staging or discarded copy of `final` from this host, else None.

    A trailing suffix is allowed: builders keep side files next to their staging dir (a job spec, an export dir).
    """
    match = re.fullmatch(
        rf"{re.escape(final.name)}\.(?:staging|discarded)-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{{8}}(?:\..*)?",
        name,
    )
    if match is None or match["host"] != HOST:
        return None
    return int(match["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(final: Path) -> list[Path]:
    """Remove what builds of `final` on this host left behind when they died; return what was removed."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    removed = []
    for path in final.parent.iterdir():
        pid = _leftover(final, path.name)
        if pid is not None and not _alive(pid):
            _remove(path)
            removed.append(path)
    return removed


def discard(entry: Path) -> None:
    """Take a corrupt or half-built entry out of the way: renamed first (the path is free at once, and a
    concurrent reader sees either the old entry or none), then removed."""
    aside = _aside(Path(entry), "discarded")
    try:
        Path(entry).rename(aside)
    except FileNotFoundError:  # another process discarded it first
        return
    _remove(aside)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty dir to build `final` in; rename it to `final` when the block completes.

    On any exception (KeyboardInterrupt and SystemExit included) the staging dir is removed and `final` is left as
    it was. If another process published `final` while this one was building, theirs is kept and ours dropped:
    both are complete builds of the same content key. `final` must not hold an entry the caller wants replaced;
    `discard` it first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    staging = _aside(final, "staging")
    staging.mkdir()
    try:
        yield staging
        try:
            staging.rename(final)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        _remove(staging)
