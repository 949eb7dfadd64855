"""Build the CPU vLLM as a real Docker image, from packages only (no container registry is reachable here).

1. Base: a minimal Debian (debootstrap from the configured mirror, with python3-venv and tcmalloc), turned into an
   image with `docker import`.
2. Wheels: `pip download` on the host, through the host's own pip configuration (its indexes, certificates and
   local wheels, e.g. the CPU torch), into a wheelhouse; the project's vLLM plugin is built as a wheel beside them.
3. The venv: installed inside a container of the base from that wheelhouse only (`--no-index`, no network), the
   packages the image config removes are removed, and the container is committed as the image.

Every step is keyed by what goes into it, so an unchanged config reuses the image and a changed one builds anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from specsweep.cache_check import sha256_file
from specsweep.config.schema import CpuDockerImage
from specsweep.docker_engine import EngineError, docker, image_id, require_engine
from specsweep.envs import index_args, indexes_here, run_logged, tree_sha256
from specsweep.images.base import image_kind, preview_record
from specsweep.images.container import ContainerBackend
from specsweep.images.cpu_extension import check_argv, with_extension_check
from specsweep.images.cpu_host import DTYPES, choose_serving, preview_serving
from specsweep.images.derive import derive_image
from specsweep.paths import cache_dir, project_relative
from specsweep.records.host import read_cpu_facts
from specsweep.records.image import ImageRecord, PreloadRecord
from specsweep.staging import staged_dir

VENV = "/opt/vllm"
PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEY_LABEL = "specsweep.image-key"


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def base_key(image: CpuDockerImage) -> str:
    return _key(image.base.model_dump(mode="json"))


def image_key(image: CpuDockerImage) -> str:
    return _key({
        "base": base_key(image),
        "requirements": sha256_file(project_relative(image.requirements)),
        "remove": sorted(image.remove_packages),
        "local": [tree_sha256(project_relative(path)) for path in image.local_packages],
        # Only when this machine has any, so images built before them keep their keys.
        **({"extra_index_urls": urls} if (urls := indexes_here(image.extra_index_urls)) else {}),
    })  # fmt: skip


def _step(what: str, argv: list[str], log: Path) -> None:
    run_logged(argv, log, what, tag="image")


def ensure_base(image: CpuDockerImage, log: Path) -> str:
    """The Debian base image, debootstrapped and imported once per base config; returns its tag."""
    tag = f"specsweep/debian-base:{base_key(image)}"
    if image_id(tag):
        return tag
    for tool in ("debootstrap", "tar"):
        if shutil.which(tool) is None:
            raise EngineError(f"{tool} not found: the base of image {image.name} is debootstrapped here; apt-get install debootstrap")
    if os.geteuid() != 0:
        raise EngineError(f"debootstrap needs root to build the base of image {image.name}; run the build as root")
    base = image.base
    rootfs = cache_dir() / "build" / f"rootfs-{base_key(image)}"
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    with staged_dir(rootfs) as staging:
        _step(
            f"debootstrap {base.suite} ({', '.join(base.packages)}) from {base.mirror} (about a minute)",
            ["debootstrap", "--variant=minbase", f"--include={','.join(base.packages)}", base.suite, str(staging), base.mirror],
            log,
        )
    print(f"[image] docker import {tag}", file=sys.stderr, flush=True)
    try:
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "--change", f"ENV PATH={PATH}", "-", tag], stdin=tar.stdout,
                                  capture_output=True, text=True)  # fmt: skip
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise EngineError(f"docker import of {rootfs} failed: {imported.stderr.strip()[-500:]}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return tag


def build_wheelhouse(image: CpuDockerImage, where: Path, log: Path) -> None:
    """Every wheel the venv needs, fetched with the host's pip (its indexes and certificates), plus local packages."""
    requirements = project_relative(image.requirements)
    shutil.copyfile(requirements, where / "requirements.txt")
    _step(
        f"pip download -r {image.requirements} (the image's wheels; minutes when pip's cache is cold)",
        [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-d", str(where), "-r", str(requirements),
         *index_args(indexes_here(image.extra_index_urls))],
        log,
    )
    for path in image.local_packages:
        _step(f"building {path} as a wheel", [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                                             str(where / "local"), str(project_relative(path))], log)  # fmt: skip


def build(image: CpuDockerImage) -> tuple[str, str, float]:
    """Build (or find) the image for this config; returns (tag, image id, build seconds)."""
    require_engine()
    key = image_key(image)
    tag = f"specsweep/{image.name}:{key}"
    found = image_id(tag)
    if found:
        return tag, found, 0.0
    started = time.monotonic()
    work = cache_dir() / "build" / f"{image.name}-{key}"
    log = cache_dir() / "build" / f"{image.name}-{key}.log"
    work.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    base = ensure_base(image, log)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        build_wheelhouse(image, work, log)
        pip = [f"{VENV}/bin/pip", "--disable-pip-version-check", "--no-cache-dir"]
        steps = [
            (f"creating the venv {VENV} in the image", ["python3", "-m", "venv", VENV]),
            ("installing the wheels into the image (offline, from the wheelhouse)",
             [*pip, "install", "--no-index", "--find-links", "/wheels", "-r", "/wheels/requirements.txt"]),
            *([(f"removing {image.remove_packages}", [*pip, "uninstall", "-y", *image.remove_packages])]
              if image.remove_packages else []),
            *[(f"installing {wheel.name}", [*pip, "install", "--no-index", "--no-deps", f"/wheels/local/{wheel.name}"])
              for wheel in sorted((work / "local").glob("*.whl"))],
            # vLLM only warns when its CPU extension cannot load (a system library missing from the base, e.g.
            # libnuma) and then fails at the first server start: load it here, the build vLLM picks for this CPU,
            # so such an image is never committed.
            ("checking that vLLM loads its CPU extension in the image", check_argv(f"{VENV}/bin/python")),
        ]  # fmt: skip
        found = derive_image(base, tag, KEY_LABEL, key, work, steps, log, changes=(f"ENV PATH={PATH}",))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag, found, round(time.monotonic() - started, 1)


# Run inside the image: vLLM's version and commit, which build of its CPU extension loads on this host and whether it
# has the native int4 GEMM, what is installed, and where the preloaded libraries are (with their digests).
RECORD_PROBE = with_extension_check("""
import glob, hashlib, importlib.metadata as md
from vllm import _version
preload = {}
for library in LIBRARIES:
    hits = sorted(p for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "VENV/lib")
                  for p in glob.glob(d + "/" + library))
    if hits:
        preload[library] = [hits[0], hashlib.sha256(open(hits[0], "rb").read()).hexdigest()]
print(json.dumps({
    "version": vllm.__version__,
    "commit": getattr(_version, "__commit_id__", None),
    "extension": extension["extension"],
    "native_wna16": extension["native_wna16"],
    "python": sys.version.split()[0],
    "freeze": sorted(d.metadata["Name"] + "==" + d.version for d in md.distributions()),
    "preload": preload,
}))
""")


@image_kind("cpu_docker")
class CpuDockerBackend(ContainerBackend):
    cfg: CpuDockerImage
    python_path = f"{VENV}/bin/python"

    def entry(self, model_path: str) -> list[str]:
        return [self.python_path, "-m", self.cfg.module, "--model", model_path]

    def preview(self) -> ImageRecord:
        image = self.cfg
        tag = f"specsweep/{image.name}:{image_key(image)}"
        return preview_record(image.name, self.kind, f"<id of {tag}>", image.offline, preview_serving(image.wna16_kernel))

    def build(self) -> ImageRecord:
        image = self.cfg
        tag, found_id, seconds = build(image)
        libraries = [lib.library for lib in image.preload if lib.applies_to(platform.machine())]
        program = RECORD_PROBE.replace("LIBRARIES", repr(libraries)).replace("VENV", VENV)
        facts = self.probe(found_id, program, f"probing vLLM in {tag}")
        missing = [library for library in libraries if library not in facts["preload"]]
        if missing:
            raise EngineError(f"{', '.join(missing)} not found in image {tag}; fix image.preload (or set it to [])")
        cpu = read_cpu_facts()
        created = docker("image", "inspect", "--format", "{{.Created}}", found_id).stdout.strip()
        return ImageRecord(
            name=image.name,
            kind=self.kind,
            location=found_id,
            vllm_version=facts["version"],
            vllm_commit=facts["commit"],
            key=image_key(image),
            packages=facts["freeze"],
            build_seconds=seconds,
            built_at=created,
            offline=image.offline,
            details={"tag": tag, "python": facts["python"], "module": image.module, "base": base_key(image)},
            host_cpu=cpu,
            cpu_extension=facts["extension"],
            native_wna16_op=facts["native_wna16"],
            serving_by_dtype={d: choose_serving(d, cpu, facts["native_wna16"], image.wna16_kernel) for d in DTYPES},
            preload=[PreloadRecord(library=name, path=path, source=f"image {tag}", sha256=digest)
                     for name, (path, digest) in facts["preload"].items()],  # fmt: skip
        )
