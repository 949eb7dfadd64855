"""Hub weights before serving, offline: a Hugging Face hub cache laid out from the packaged model under HF_HOME.

The layout is huggingface_hub's own (models--org--name/{blobs,snapshots/<commit>,refs/main}; LFS blobs named by
their sha256, small files by their git blob id), so `snapshot_download(local_files_only=True)` resolves it exactly
as it resolves a cache a real download made.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from project import job_config, project_env

from specsweep.cache_check import sha256_file
from specsweep.config.compose import compose_cell
from specsweep.models.hub import HubError, fetch_snapshot, snapshot_problems
from specsweep.records.hub import HubSnapshot

pytestmark = pytest.mark.slow  # needs the prepared packaged model (minutes on a cold cache)

REPO = "specsweep-test/gemma-3-270m"
COMMIT = "5f0c3a9e2b7d4c1a8e6f0b3d9c2a7e4f1b8d6c0a"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out_hub_cache(model_dir: Path, digests: dict[str, str], hf_home: Path, repo_id: str = REPO,
                      commit: str = COMMIT) -> Path:  # fmt: skip
    """`digests`: the weights' sha256 as the model's record has them (hashing 1 GB again per test costs seconds)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("specsweep")):
        lfs = path.suffix == ".safetensors" or path.stat().st_size > 10_000_000
        blob = repo / "blobs" / ((digests.get(path.name) or sha256_file(path)) if lfs else git_blob_id(path.read_bytes()))
        os.link(path, blob) if lfs else blob.write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def model():
    from specsweep.models.prepare import prepare_model

    return prepare_model(compose_cell([]).cell.model)


@pytest.fixture
def model_dir(model) -> Path:
    return Path(model.location)


@pytest.fixture
def offline_hub(tmp_path: Path, model, monkeypatch) -> Path:
    hf_home = tmp_path / "hf"
    lay_out_hub_cache(Path(model.location), model.weights_sha256, hf_home)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)  # it reads HF_HOME / HF_HUB_OFFLINE at import
    yield hf_home
    monkeypatch.undo()
    importlib.reload(huggingface_hub.constants)


def test_a_revision_resolves_to_its_commit_and_every_file_is_checked(offline_hub: Path, model_dir: Path) -> None:
    snapshot = fetch_snapshot(REPO, "main")
    assert snapshot.commit == COMMIT and snapshot.offline
    assert Path(snapshot.local_dir) == offline_hub / "hub/models--specsweep-test--gemma-3-270m/snapshots" / COMMIT
    weights = [f for f in snapshot.files if f.path.endswith(".safetensors")]
    assert weights and all(f.sha256_source == "hub" for f in weights)
    # The hub's digest of each weight file is the file's own (fetch hashed the snapshot it serves).
    assert {f.path: f.sha256 for f in weights} == {p.name: sha256_file(p) for p in model_dir.glob("*.safetensors")}
    assert {f.path for f in snapshot.files} >= {"config.json", "tokenizer.json"}
    assert snapshot_problems(snapshot) == []
    # A pinned commit resolves to itself.
    assert fetch_snapshot(REPO, COMMIT).commit == COMMIT


def test_a_blob_that_does_not_match_its_sha256_is_refused(offline_hub: Path) -> None:
    blobs = offline_hub / "hub/models--specsweep-test--gemma-3-270m/blobs"
    config_blob = next(b for b in blobs.iterdir() if len(b.name) == 40)  # a small git file: computed, not refused
    lfs_blob = next(b for b in blobs.iterdir() if len(b.name) == 64)
    lfs_blob.unlink()  # the hard link: replace it, never write into the packaged model
    lfs_blob.write_bytes(b"not the weights")
    with pytest.raises(HubError, match=r"sha256 .* does not match the hub's .*delete .* and prepare again"):
        fetch_snapshot(REPO, "main")
    assert config_blob.is_file()


def test_a_repo_missing_from_the_offline_cache_says_how_to_get_it(offline_hub: Path) -> None:
    with pytest.raises(HubError, match="not in the hub cache and HF_HUB_OFFLINE is set; prepare it once online"):
        fetch_snapshot("specsweep-test/absent", "main")


def test_a_snapshot_changed_after_prepare_fails_the_quick_check(offline_hub: Path) -> None:
    snapshot = fetch_snapshot(REPO, "main")
    config = Path(snapshot.local_dir) / "config.json"
    target = config.resolve()
    config.unlink()
    config.write_text(target.read_text() + " ")
    assert snapshot_problems(snapshot) == [f"config.json: {config.stat().st_size} bytes, recorded {config.stat().st_size - 1}"]
    assert isinstance(HubSnapshot.model_validate(json.loads(snapshot.model_dump_json())), HubSnapshot)


def test_the_drafter_prepare_job_pins_the_snapshot_it_serves(offline_hub: Path, tmp_path: Path) -> None:
    receipt = tmp_path / "drafter.json"
    env = {**project_env(Path.cwd()), "HF_HOME": str(offline_hub), "HF_HUB_OFFLINE": "1"}
    overrides = ["sweep=spark", "drafter=gemma_mtp", "k=3", "quant=ebircak_nvfp4a16_gptq",
                 f"drafter.model={REPO}"]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "specsweep.cli", "job", "drafter", "--receipt", str(receipt),
                             "--job-config", job_config(tmp_path, "drafter", *overrides)], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(receipt.read_text())
    assert record["revision"] == COMMIT and record["location"].endswith(f"/snapshots/{COMMIT}")
    assert record["weights_sha256"] and record["details"]["hub"]["repo_id"] == REPO
