"""Write outputs so that a crash never leaves a file that looks complete."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class OutputError(OSError):
    """An output could not be written; the message names the file, the cause and the fix."""


_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _fix(path: Path, err: OSError) -> str:
    if err.errno in _FULL:
        return f"free space on the filesystem holding {path.parent} (or raise its quota/file size limit) and rerun"
    if err.errno in _DENIED:
        return f"make {path.parent} writable (or run from a checkout whose results/ you can write) and rerun"
    return f"check that {path.parent} is a writable directory and rerun"


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file renamed into place; a failure leaves the old file as it was."""
    path = Path(path)
    try:
        _write_bytes(path, data)
    except OSError as err:
        if isinstance(err, OutputError):
            raise
        raise OutputError(err.errno, f"cannot write {path}: {err.strerror or err}; {_fix(path, err)}") from err


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; results and reports are meant to be read like any file `open()` would create.
        os.chmod(tmp, _default_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
