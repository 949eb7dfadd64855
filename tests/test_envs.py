"""Environment keys: what goes into them decides when a cached env is reused or rebuilt."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from specsweep.config.compose import compose_cell
from specsweep.envs import env_key
from specsweep.images.base import build_image
from specsweep.models.prepare import prepare_model

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


TOKENIZER_COPIES = """
import copy, json, sys
from vllm.plugins import load_general_plugins
from vllm.tokenizers.hf import maybe_make_thread_pool
from transformers import AutoTokenizer

load_general_plugins()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
copied = copy.deepcopy(tok)
pool = maybe_make_thread_pool(copy.copy(tok), 2)
texts = [json.loads(line)["prompt"] for line in open(sys.argv[2])] + ["<start_of_turn>user\\n日本語 ☃ x**2<end_of_turn>"]
print(json.dumps({
    "shared": [copied.__dict__[name] is tok.__dict__[name] for name in ("_vocab", "_merges")],
    "own_rust_tokenizer": copied._tokenizer is not tok._tokenizer,
    "same_ids": [copied.encode(t) == tok.encode(t) == pool.encode(t) for t in texts],
    "same_text": [pool.decode(tok.encode(t)) == tok.decode(tok.encode(t)) for t in texts],
}))
"""


@pytest.mark.slow
def test_the_servers_tokenizer_copies_share_the_read_only_tables_and_tokenize_the_same() -> None:
    """The plugin's entry point is installed in the CPU vLLM env and vLLM's tokenizer pool gives the same tokens."""
    cell = compose_cell([]).cell
    python = Path(build_image(cell.image).location) / "bin" / "python"
    model = prepare_model(cell.model)
    out = subprocess.run([str(python), "-c", TOKENIZER_COPIES, model.location, str(ROOT / "data/eval/lossless_prompts.jsonl")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["shared"] == [True, True]
    assert facts["own_rust_tokenizer"]
    assert all(facts["same_ids"]) and all(facts["same_text"]) and len(facts["same_ids"]) == 5


@pytest.mark.slow
def test_an_env_is_built_by_uv_told_what_pip_is_told_and_passes_the_integrity_check(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A real build (two small pins from the package index, a removal, the project's vLLM plugin as a local package)
    into a cache of its own: uv installs, with this machine's pip settings (its find-links hold the local CPU torch
    on these hosts), compiles bytecode like pip, and leaves RECORDs the cache's integrity check holds it to."""
    from specsweep.cache_check import reusable, verify_entry
    from specsweep.envs import ensure_env
    from specsweep.installer import pip_settings

    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.17.0\nidna==3.10\n")
    record = ensure_env("tiny", requirements, remove_packages=["idna"], check_import="six", local_packages=[PLUGIN])
    root = Path(record.root)
    assert "six==1.17.0" in record.freeze and f"specsweep-vllm-cpu @ {PLUGIN.as_uri()}" in record.freeze
    assert not [line for line in record.freeze if line.lower().startswith("idna")]
    (site,) = root.glob("lib/python*/site-packages")
    assert (site / "six-1.17.0.dist-info/INSTALLER").read_text().strip() == "uv"
    assert list(site.glob("__pycache__/six.*.pyc"))  # compiled at install, as pip does
    assert verify_entry(root) == [] and reusable(root)
    log = (root.parent / f"{root.name}.build.log").read_text()
    assert "-m uv pip install --link-mode copy" in log and "--index-strategy unsafe-best-match" in log
    for link in pip_settings().get("find-links", []):
        assert f"--find-links {link}" in log
    # A file changed after the build fails the check (uv's RECORDs carry every file's digest); it is the env's own
    # copy, so a second build (from uv's now warm cache) is whole.
    (site / "six.py").write_text("tampered = True\n")
    assert not reusable(root, deep=True)
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "again"))
    again = Path(ensure_env("tiny", requirements, remove_packages=["idna"], check_import="six",
                            local_packages=[PLUGIN]).root)  # fmt: skip
    assert verify_entry(again) == [] and "tampered" not in next(again.glob("lib/python*/site-packages/six.py")).read_text()
