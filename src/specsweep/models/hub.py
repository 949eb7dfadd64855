"""Hub weights before serving: download into HF_HOME, pin the revision to a commit, check every file's sha256.

vLLM would otherwise fetch ~62 GB inside its start window, at whatever `main` is that day. Here each repo (base,
drafter, pre-quantized checkpoint) is resolved to the commit its revision names at prepare time, downloaded with
huggingface_hub into the standard cache under HF_HOME (shared with vLLM, the users' own tools and the container's
mounted /root/.cache/huggingface), and every file is checked against the hub's sha256 (LFS files; small git files are
hashed and recorded). Servers get the local snapshot directory, so nothing is downloaded at serve time.

Offline (HF_HUB_OFFLINE=1) the same call resolves the revision through the cache's refs and checks the files against
the sha256 the cache names their blobs by: a snapshot that was prepared once can be prepared again without a network.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from specsweep.cache_check import sha256_file
from specsweep.records.hub import HubFile, HubSnapshot

_SHA256 = re.compile(r"[0-9a-f]{64}")


class HubError(RuntimeError):
    pass


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _check(local: Path, name: str, expected: str | None, repo_id: str) -> HubFile:
    digest = sha256_file(local)
    if expected is not None and digest != expected:
        raise HubError(
            f"{repo_id}/{name}: sha256 {digest[:16]}... does not match the hub's {expected[:16]}...; delete "
            f"{local.resolve()} and prepare again"
        )
    return HubFile(path=name, size=local.stat().st_size, sha256=digest, sha256_source="hub" if expected else "computed")


def fetch_snapshot(repo_id: str, revision: str) -> HubSnapshot:
    """Download (or find) `repo_id` at `revision` in HF_HOME's hub cache and verify it; see the module docstring."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = _offline()
    try:
        if offline:
            local = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
            commit = local.name
            expected: dict[str, str | None] = {}
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                blob = path.resolve().name
                expected[path.relative_to(local).as_posix()] = blob if _SHA256.fullmatch(blob) else None
        else:
            info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
            commit = info.sha
            expected = {s.rfilename: (s.lfs.sha256 if s.lfs else None) for s in info.siblings or []}
            print(f"[hub] {repo_id}@{revision} is commit {commit}; downloading {len(expected)} files into the hub cache",
                  file=sys.stderr, flush=True)  # fmt: skip
            local = Path(snapshot_download(repo_id, revision=commit))
    except LocalEntryNotFoundError as err:
        raise HubError(
            f"{repo_id}@{revision} is not in the hub cache and HF_HUB_OFFLINE is set; prepare it once online "
            f"(unset HF_HUB_OFFLINE) or copy the snapshot into {_hub_cache()}"
        ) from err
    except (RepositoryNotFoundError, HfHubHTTPError) as err:
        raise HubError(f"cannot fetch {repo_id}@{revision}: {err}; check the repo id, the revision, and HF_TOKEN for "
                       "gated repos (list HF_TOKEN in serve.forward_env and export it)") from err  # fmt: skip
    files = []
    for name, sha in sorted(expected.items()):
        path = local / name
        if not path.is_file():
            raise HubError(f"{repo_id}@{commit}: {name} is missing from {local}; delete the snapshot and prepare again")
        files.append(_check(path, name, sha, repo_id))
    return HubSnapshot(repo_id=repo_id, revision=revision, commit=commit, local_dir=str(local), files=files, offline=offline)


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def snapshot_problems(snapshot: HubSnapshot) -> list[str]:
    """Quick check before serving (every file present at its recorded size, LFS blobs still named by their recorded
    sha256); the full hash ran when the snapshot was prepared."""
    local = Path(snapshot.local_dir)
    problems = []
    for file in snapshot.files:
        path = local / file.path
        if not path.is_file():
            problems.append(f"{file.path}: missing")
        elif path.stat().st_size != file.size:
            problems.append(f"{file.path}: {path.stat().st_size} bytes, recorded {file.size}")
        elif file.sha256_source == "hub" and path.is_symlink() and path.resolve().name != file.sha256:
            problems.append(f"{file.path}: now points at blob {path.resolve().name[:16]}..., recorded {file.sha256[:16]}...")
    return problems
