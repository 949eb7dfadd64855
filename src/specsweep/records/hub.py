"""A hub snapshot as prepared: repo, the commit its revision resolved to, and every file's sha256."""

from __future__ import annotations

from pydantic import BaseModel


class HubFile(BaseModel):
    path: str
    size: int
    sha256: str
    # Where the sha256 came from: "hub" (the LFS metadata, checked against the file) or "computed" (a small git file).
    sha256_source: str


class HubSnapshot(BaseModel):
    repo_id: str
    # As configured (a branch, tag or commit) and as resolved at prepare time.
    revision: str
    commit: str
    local_dir: str
    files: list[HubFile]
    offline: bool

    @property
    def sha256(self) -> dict[str, str]:
        return {file.path: file.sha256 for file in self.files}
