"""What a dead server's log says: its root error line and the lines leading up to it."""

from __future__ import annotations

import re
from pathlib import Path

# A Python exception line, bare (a traceback on stderr) or after vLLM's "(EngineCore pid=N) ERROR ... [file] " prefix.
_EXCEPTION = re.compile(r"(?:^|\] |\) )((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupt)): (.+)$")
# Errors that report another process's death, not its cause.
_SYMPTOMS = ("EngineDeadError", "EngineGenerateError")


def root_error(lines: list[str]) -> int | None:
    """Index of the line naming the server's root error: the last exception line that is not a symptom."""
    found = [i for i, line in enumerate(lines) if _EXCEPTION.search(line)]
    causes = [i for i in found if not any(s in lines[i] for s in _SYMPTOMS)]
    return (causes or found or [None])[-1]


def failure_excerpt(path: Path, count: int = 50) -> tuple[str | None, list[str]]:
    """(the root error line, the `count` log lines ending at it); without an exception line, the last lines.

    Ending at the error skips what a dying vLLM prints after it (shutdown chatter, nanobind leak reports).
    """
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None, []
    index = root_error(lines)
    if index is None:
        return None, lines[-count:]
    match = _EXCEPTION.search(lines[index])
    return f"{match.group(1)}: {match.group(2)}".strip(), lines[max(0, index + 1 - count) : index + 1]
