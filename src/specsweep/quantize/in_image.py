"""The quantizer inside the serving image: the tools' own pins in a venv layered on the image's Python.

On the Spark the image's torch is the build that runs on its GPU; llmcompressor, auto-round and compressed-tensors
pin versions that vLLM's own pins conflict with (compressed-tensors 0.19 for auto-round's export, vLLM 0.32 ships
0.17), so they cannot share one env. A derived image adds `/opt/specsweep-quantize`, a venv whose own site-packages
come first and whose `.pth` file appends the image's site-packages: the tools' versions win, the image's torch (and
its CUDA libraries) is the one imported. Its wheels are fetched on the host by pip for the image's Python version
(pip's indexes and certificates are the host's), installed in a builder container with no network, and the result
is committed, keyed by the serving image's id and the pins.

job.py then runs in a container of that image with the serving launcher's flags (GPUs, IPC, allocator env: the
image's `container` config), every path it reads or writes mounted at the same path, the run's labels (a killed run's
leftover is found and removed like a server's), and `docker stop` on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from specsweep.config.schema import QuantizerCfg
from specsweep.docker_engine import image_id, require_engine
from specsweep.envs import run_logged
from specsweep.images.base import backend_of
from specsweep.images.derive import derive_image
from specsweep.paths import cache_dir, project_relative
from specsweep.records.image import ImageRecord

TOOLS_VENV = "/opt/specsweep-quantize"
TOOLS_PYTHON = f"{TOOLS_VENV}/bin/python"
KEY_LABEL = "specsweep.quantize-tools-key"
# The image's Python: its version (wheels are fetched for it) and where its packages live (appended to the venv).
SITE_PROBE = """
import json, site, sys
print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "site": site.getsitepackages()}))
"""
CHECK = "import importlib.metadata as md, torch, llmcompressor, auto_round, compressed_tensors; print(md.version('compressed-tensors'))"


@dataclass(frozen=True)
class ToolsImage:
    tag: str
    id: str
    key: str


def _name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip().lower().replace("_", "-")


def tools_requirements(quantizer: QuantizerCfg) -> list[str]:
    """The tools' pins without the packages the image provides (matched by name, `*` allowed)."""
    lines = [line.strip() for line in project_relative(quantizer.requirements).read_text().splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    return [pin for pin in pins if not any(fnmatch.fnmatch(_name(pin), pattern.lower()) for pattern in quantizer.from_image)]


def tools_key(image_id: str, quantizer: QuantizerCfg) -> str:
    identity = {"image": image_id, "requirements": tools_requirements(quantizer), "venv": TOOLS_VENV}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def ensure_tools_image(image_cfg, record: ImageRecord) -> ToolsImage:
    """The serving image plus the tools venv: found by its key, else built (minutes: the wheels, then a commit)."""
    require_engine()
    quantizer = image_cfg.quantizer
    key = tools_key(record.location, quantizer)
    tag = f"specsweep/quantize-tools:{key}"
    found = image_id(tag)
    if found:
        return ToolsImage(tag=tag, id=found, key=key)
    # Only container images have a quantizer config (image.quantizer): this is a ContainerBackend.
    kind = backend_of(image_cfg)
    facts = kind.probe(record.location, SITE_PROBE, f"finding the Python of image {record.name}")
    work = cache_dir() / "build" / f"quantize-tools-{key}"
    log = cache_dir() / "build" / f"quantize-tools-{key}.log"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.write_text("")
    try:
        (work / "requirements.txt").write_text("\n".join(tools_requirements(quantizer)) + "\n")
        # The pins are a full resolved set: --no-deps keeps pip from fetching a torch (GBs of CUDA wheels on the Spark)
        # that the image provides; the offline install below still resolves every dependency and fails on a gap.
        run_logged([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    facts["python"], "-d", str(work), "-r", str(work / "requirements.txt")], log,
                   f"pip download -r {quantizer.requirements} for Python {facts['python']} (the quantizer's wheels)",
                   tag="quantize")  # fmt: skip
        site_packages = f"{TOOLS_VENV}/lib/python{facts['python']}/site-packages"
        steps = [
            (f"creating the venv {TOOLS_VENV} on the image's Python", [kind.python_path, "-m", "venv", "--without-pip", TOOLS_VENV]),
            ("appending the image's site-packages to it (its torch is the one imported)",
             ["sh", "-c", f"printf '%s\\n' {shlex.join(facts['site'])} > {shlex.quote(site_packages)}/_specsweep_image_site.pth"]),
            ("installing the tools' wheels into it (offline, from the wheelhouse)",
             [kind.python_path, "-m", "pip", "--disable-pip-version-check", "--python", TOOLS_PYTHON, "install",
              "--no-cache-dir", "--no-index", "--find-links", "/wheels", "-r", "/wheels/requirements.txt"]),
            ("checking that the tools and the image's torch import", [TOOLS_PYTHON, "-c", CHECK]),
        ]  # fmt: skip
        found = derive_image(record.location, tag, KEY_LABEL, key, work, steps, log, progress_tag="quantize")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ToolsImage(tag=tag, id=found, key=key)


def run_job(image_cfg, tools: ToolsImage, job: Path, spec: Path, read_only: list[str], writable: list[str]) -> int:
    """Run job.py in a container of the tools image, as the serving image's backend runs any job in its images."""
    # Named after the checkpoint (the spec sits next to its staging dir: <checkpoint>.staging-....spec.json).
    name = "specsweep-quantize-" + re.sub(r"[^A-Za-z0-9_.-]", "-", spec.name.split(".staging")[0])
    return backend_of(image_cfg).run_job(tools.id, name, f"quantize/{name}", [TOOLS_PYTHON, str(job), str(spec)],
                                         [*read_only, str(job), str(spec)], writable)  # fmt: skip
