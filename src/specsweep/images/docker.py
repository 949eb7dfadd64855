"""A vLLM container image (spark-vllm-docker on the DGX Spark): built once, then recorded by image id."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from specsweep.config.schema import DockerImage
from specsweep.images.base import ImageRecord, builder
from specsweep.paths import cache_dir


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def _image_id(tag: str) -> str | None:
    result = _docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def build_steps(image: DockerImage) -> list[list[str]]:
    """The commands that build the image from its repo, in order (clone, checkout, build)."""
    checkout = cache_dir() / "build" / image.build_repo.replace("/", "__")
    return [
        ["git", "clone", f"https://github.com/{image.build_repo}.git", str(checkout)],
        ["git", "-C", str(checkout), "checkout", image.build_ref],
        image.build_command,
    ]


@builder("docker")
def build_docker_image(image: DockerImage) -> ImageRecord:
    if shutil.which("docker") is None:
        raise RuntimeError("image kind docker needs the docker CLI and a running engine; use image=vllm_cpu on CPU")
    if _docker("info", check=False).returncode != 0:
        raise RuntimeError("the docker engine is not reachable (`docker info` fails); start it or fix permissions")
    started = time.monotonic()
    image_id = _image_id(image.tag)
    if image_id is None:
        checkout = cache_dir() / "build" / image.build_repo.replace("/", "__")
        steps = build_steps(image)
        if checkout.exists():
            steps = steps[1:]
        for step in steps:
            print(f"[image] {' '.join(step)}", file=sys.stderr, flush=True)
            subprocess.run(step, check=True, cwd=checkout if step is image.build_command else None)
        image_id = _image_id(image.tag)
        if image_id is None:
            raise RuntimeError(f"{image.build_command} finished but no image is tagged {image.tag}; fix image.tag")
    version = _docker("run", "--rm", "--entrypoint", "python3", image.tag, "-c",
                      "import vllm; print(vllm.__version__)").stdout.strip()
    packages = _docker("run", "--rm", "--entrypoint", "python3", image.tag, "-m", "pip", "freeze").stdout.split()
    return ImageRecord(
        name=image.name,
        kind="docker",
        location=image_id,
        vllm_version=version,
        key=image_id.removeprefix("sha256:")[:16],
        packages=sorted(packages),
        build_seconds=round(time.monotonic() - started, 1),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        offline=image.offline,
        details={"tag": image.tag, "build_repo": image.build_repo, "build_ref": image.build_ref},
    )
