"""A cache entry whose files no longer match its manifest is caught on use: rebuilt by its builder, refused with the
path and the fix by a consumer. Small synthetic entries in a temp cache; no venv, pip or model is built."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

import pytest

from specsweep import envs
from specsweep.cache_check import (
    CorruptEntry,
    require_intact,
    require_receipt_intact,
    reusable,
    verify_entry,
    write_files_manifest,
)

SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
WEIGHTS = b"\x01\x02\x03\x04" * 1024


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv("SPECSWEEP_CACHE", str(where))
    return where


def record_row(site: Path, path: Path) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
    return f"{os.path.relpath(path, site)},sha256={digest},{path.stat().st_size}"


def fake_venv(root: Path) -> list[str]:
    """What a venv build leaves that the check reads: bin/python, a package, its dist-info RECORD, a bytecode cache."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(sys.executable)
    site = root / SITE
    package = site / "fakepkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "weights.bin").write_bytes(WEIGHTS)
    (package / "__pycache__" / "__init__.cpython.pyc").write_bytes(b"bytecode")
    (root / "bin" / "fakepkg-cli").write_text("#!/bin/sh\n")
    dist_info = site / "fakepkg-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Name: fakepkg\nVersion: 1.0\n")
    files = [package / "__init__.py", package / "weights.bin", package / "__pycache__" / "__init__.cpython.pyc",
             root / "bin" / "fakepkg-cli", dist_info / "METADATA"]  # fmt: skip
    rows = [record_row(site, path) for path in files] + ["fakepkg-1.0.dist-info/RECORD,,"]
    (dist_info / "RECORD").write_text("\n".join(rows) + "\n")
    return ["fakepkg==1.0"]


def make_env(root: Path) -> Path:
    freeze = fake_venv(root)
    (root / "specsweep-env.json").write_text(json.dumps({"name": "fake", "freeze": freeze}))
    return root / SITE / "fakepkg" / "weights.bin"


def make_quant(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(WEIGHTS)
    (root / "config.json").write_text('{"quantization_config": {}}')
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}
    (root / "quant_manifest.json").write_text(json.dumps({"files_sha256": files}))
    return root / "model.safetensors"


def make_model(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(WEIGHTS)
    (root / "tokenizer.json").write_text('{"model": {}}')
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    (root / "specsweep-model.json").write_text(json.dumps({"weights_sha256": {"model.safetensors": digest}}))
    write_files_manifest(root)
    return root / "model.safetensors"


def make_files(root: Path) -> Path:
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "libfake.so.4").write_bytes(WEIGHTS)
    (root / "VERSION").write_text("1.0\n")
    write_files_manifest(root)
    return root / "usr" / "lib" / "libfake.so.4"


KINDS: dict[str, Callable[[Path], Path]] = {"env": make_env, "quant": make_quant, "model": make_model,
                                            "files": make_files}  # fmt: skip


def edit_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("deep", [False, True], ids=["quick", "deep"])
def test_intact_entries_pass(tmp_path: Path, kind: str, deep: bool) -> None:
    KINDS[kind](tmp_path / "entry")
    assert verify_entry(tmp_path / "entry", deep) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("deep", [False, True], ids=["quick", "deep"])
def test_a_truncated_file_is_caught(tmp_path: Path, kind: str, deep: bool) -> None:
    victim = KINDS[kind](tmp_path / "entry")
    with victim.open("r+b") as handle:
        handle.truncate(100)
    problems = verify_entry(tmp_path / "entry", deep)
    assert problems and victim.name in problems[0], problems


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("deep", [False, True], ids=["quick", "deep"])
def test_a_same_size_edit_is_caught(tmp_path: Path, kind: str, deep: bool) -> None:
    victim = KINDS[kind](tmp_path / "entry")
    edit_same_size(victim)
    problems = verify_entry(tmp_path / "entry", deep)
    assert problems and victim.name in problems[0] and "sha256" in problems[0], problems


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_file_is_caught(tmp_path: Path, kind: str) -> None:
    victim = KINDS[kind](tmp_path / "entry")
    victim.unlink()
    assert verify_entry(tmp_path / "entry") == [f"{victim.relative_to(tmp_path / 'entry').as_posix()}: missing"]


def test_only_the_deep_check_sees_an_edit_that_kept_size_and_mtime(tmp_path: Path) -> None:
    """The quick check's documented blind spot: it trusts size plus an mtime older than the manifest."""
    victim = make_env(tmp_path / "env")
    before = victim.stat()
    edit_same_size(victim)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))
    assert verify_entry(tmp_path / "env", deep=False) == []
    assert verify_entry(tmp_path / "env", deep=True)


def test_env_checks_that_every_frozen_distribution_keeps_its_record(tmp_path: Path) -> None:
    make_env(tmp_path / "env")
    record = tmp_path / "env" / SITE / "fakepkg-1.0.dist-info" / "RECORD"
    record.unlink()
    assert any("fakepkg" in problem and "RECORD" in problem for problem in verify_entry(tmp_path / "env"))


def test_rewritten_bytecode_is_not_corruption(tmp_path: Path) -> None:
    make_env(tmp_path / "env")
    (tmp_path / "env" / SITE / "fakepkg" / "__pycache__" / "__init__.cpython.pyc").write_bytes(b"recompiled, longer")
    assert verify_entry(tmp_path / "env", deep=True) == []


def test_a_dir_without_manifest_is_an_unfinished_build(tmp_path: Path) -> None:
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "model.safetensors").write_bytes(WEIGHTS)
    assert "no manifest" in verify_entry(tmp_path / "entry")[0]
    assert not reusable(tmp_path / "entry")
    assert not (tmp_path / "entry").exists()


# ---------------------------------------------------------------- builders rebuild


def test_ensure_env_rebuilds_a_corrupt_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    builds: list[Path] = []

    def fake_install(where: Path, *args: object) -> list[str]:
        builds.append(where)
        return fake_venv(where)

    monkeypatch.setattr(envs, "_install", fake_install)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("fakepkg==1.0\n")

    env = envs.ensure_env("fake", requirements)
    assert len(builds) == 1 and verify_entry(Path(env.root)) == []
    assert envs.ensure_env("fake", requirements) == env and len(builds) == 1  # intact: reused

    victim = Path(env.root) / SITE / "fakepkg" / "weights.bin"
    edit_same_size(victim)
    capsys.readouterr()
    rebuilt = envs.ensure_env("fake", requirements)
    assert len(builds) == 2
    err = capsys.readouterr().err
    assert f"[cache] {env.root}: {SITE}/fakepkg/weights.bin: content differs" in err and "rebuilding" in err
    assert rebuilt.root == env.root and verify_entry(Path(rebuilt.root)) == []
    assert victim.read_bytes() == WEIGHTS
    # Neither the corrupt copy nor the staging dir is left next to it.
    assert sorted(p.name for p in Path(env.root).parent.iterdir()) == [Path(env.root).name, f"{Path(env.root).name}.build.log"]


def test_quantize_rebuilds_a_corrupt_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from specsweep.config.compose import compose_cell
    from specsweep.models.prepare import ModelRecord
    from specsweep.quantize import run
    from specsweep.records.env import EnvRecord

    # A stand-in for job.py: writes a checkpoint and applied.json where the spec says, as the real job does.
    job = tmp_path / "fake_job.py"
    job.write_text(
        "import json, sys\nfrom pathlib import Path\n"
        "spec = json.loads(Path(sys.argv[1]).read_text()); out = Path(spec['out_dir'])\n"
        f"(out / 'model.safetensors').write_bytes({WEIGHTS!r}); (out / 'config.json').write_text('{{}}')\n"
        "(out / 'applied.json').write_text(json.dumps({'applied': {}, 'calibration': None, 'versions': {},"
        " 'wall_s': 0.1, 'peak_rss_mb': 1}))\n"
    )
    env_root = tmp_path / "env"
    (env_root / "bin").mkdir(parents=True)
    (env_root / "bin" / "python").symlink_to(sys.executable)
    env = EnvRecord(name="model_tools", key="fake", root=str(env_root), python="3", requirements_sha256="0",
                    freeze=[], build_seconds=0, built_at="now")  # fmt: skip
    monkeypatch.setattr(run, "JOB", job)
    monkeypatch.setattr(run, "model_tools_env", lambda: env)
    cell = compose_cell(["quant=w4a16_rtn"]).cell
    base = ModelRecord(name=cell.model.name, location=str(tmp_path / "base"))

    first = run._local_quant(cell.quant, cell.model, base, None)
    location = Path(first.location)
    assert location.parent == cache / "quants" and verify_entry(location) == []
    built_at = (location / "quant_manifest.json").stat().st_mtime_ns
    assert run._local_quant(cell.quant, cell.model, base, None) == first  # intact: reused, not rebuilt
    assert (location / "quant_manifest.json").stat().st_mtime_ns == built_at

    with (location / "model.safetensors").open("r+b") as handle:
        handle.truncate(10)
    capsys.readouterr()
    run._local_quant(cell.quant, cell.model, base, None)
    # The manifest records digests only: the truncation is caught by the hash.
    assert f"[cache] {location}: model.safetensors: content differs from the manifest" in capsys.readouterr().err
    assert (location / "model.safetensors").read_bytes() == WEIGHTS and verify_entry(location) == []
    assert (location / "quant_manifest.json").stat().st_mtime_ns != built_at
    assert sorted(p.name for p in location.parent.iterdir()) == [location.name]


# ---------------------------------------------------------------- consumers refuse


def test_require_intact_names_the_entry_the_file_and_the_fix(tmp_path: Path) -> None:
    victim = make_quant(tmp_path / "quants" / "q-1234")
    require_intact(tmp_path / "quants" / "q-1234", "checkpoint q", "rerun it")  # intact: no error
    edit_same_size(victim)
    receipt = "results/_quants/abcd.json"
    with pytest.raises(CorruptEntry) as caught:
        require_receipt_intact(str(tmp_path / "quants" / "q-1234"), "checkpoint q", receipt, "quantize")
    message = str(caught.value)
    assert str(tmp_path / "quants" / "q-1234") in message
    assert "model.safetensors" in message
    assert f"delete {receipt} and rerun; the quantize step will verify" in message
    # A consumer never rebuilds or moves anything.
    assert victim.exists()


def test_require_receipt_intact_skips_what_is_not_a_local_entry() -> None:
    require_receipt_intact("google/gemma-3-270m", "base model", "results/_models/x.json", "model")
    require_receipt_intact("sha256:0123abcd", "image", "results/_images/x.json", "image")


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreadable_manifest_is_a_problem_not_a_crash(tmp_path: Path, kind: str) -> None:
    KINDS[kind](tmp_path / "entry")
    marker = {"env": "specsweep-env.json", "quant": "quant_manifest.json", "model": "specsweep-model.json",
              "files": "specsweep-files.json"}[kind]  # fmt: skip
    manifest = tmp_path / "entry" / marker
    manifest.write_text(manifest.read_text()[:20])
    problems = verify_entry(tmp_path / "entry")
    assert problems and problems[0].startswith(f"{marker}: unreadable"), problems
    assert not reusable(tmp_path / "entry") and not (tmp_path / "entry").exists()


def test_a_local_entry_that_is_gone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorruptEntry, match="does not exist"):
        require_receipt_intact(str(tmp_path / "quants" / "gone"), "checkpoint q", "results/_quants/x.json", "quantize")
