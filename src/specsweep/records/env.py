"""The record of a content-addressed Python environment (record.json in its root)."""

from __future__ import annotations

from pathlib import Path

from specsweep.records.base import Record


class EnvRecord(Record):
    """A built Python environment (vLLM, model tools, lm-eval): where, from which pins, what got installed."""

    name: str
    key: str
    root: str
    python: str
    requirements_sha256: str
    freeze: list[str]
    build_seconds: float
    built_at: str

    @property
    def python_bin(self) -> Path:
        return Path(self.root) / "bin" / "python"

    def version_of(self, distribution: str) -> str | None:
        wanted = distribution.lower().replace("_", "-")
        for line in self.freeze:
            name, _, version = line.partition("==")
            if name.lower().replace("_", "-") == wanted:
                return version
        return None
