"""Quality per quant, once per quant (not per cell): perplexity, KL divergence vs the base, recovery %.

Local checkpoints (the embedded path, and any quant this project builds) are measured in-process on full
next-token distributions by `quality_job.py` in the quantizer env. Hub checkpoints of large models would be
measured through a served endpoint (prompt logprobs, top-k KLD); that path is not built yet, so their record
says `not_measured` with the reason instead of inventing a number.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from specsweep.atomic import write_json
from specsweep.cache_check import require_receipt_intact, sha256_file
from specsweep.config.compose import project_relative
from specsweep.config.schema import QualityCfg
from specsweep.envs import model_tools_env
from specsweep.models.prepare import ModelRecord
from specsweep.paths import cache_dir
from specsweep.quantize.run import QuantRecord

JOB = Path(__file__).with_name("quality_job.py")


class QualityRecord(BaseModel):
    model: str
    quant: str
    quant_kind: str
    scheme: str
    status: Literal["ok", "not_measured"]
    reason: str | None = None
    method: str | None = None
    ppl: float | None = None
    ppl_base: float | None = None
    kld: float | None = None
    # 100 * ppl_base / ppl: 100 means no loss; below 100 the quant predicts the held-out text worse.
    ppl_recovery_pct: float | None = None
    top1_agreement: float | None = None
    n_tokens: int | None = None
    window: int | None = None
    text: str
    text_sha256: str
    wall_s: float | None = None


def evaluate(quant: QuantRecord, base: ModelRecord, quality: QualityCfg) -> QualityRecord:
    text = project_relative(quality.text)
    if not text.is_file():
        raise FileNotFoundError(f"held-out text {text} does not exist; fix quality.text (conf/quality/)")
    common = dict(
        model=quant.model,
        quant=quant.quant,
        quant_kind=quant.kind,
        scheme=quant.scheme,
        text=quality.text,
        text_sha256=sha256_file(text),
    )
    if quant.kind == "hub":
        return QualityRecord(
            **common,
            status="not_measured",
            reason=f"{quant.manifest.get('repo_id', quant.location)} is a hub checkpoint; endpoint-based PPL/KLD "
            "(prompt logprobs) is not built yet",
        )
    env = model_tools_env()
    identity = {
        "quant": quant.location,
        "files": quant.manifest.get("files_sha256") or base.weights_sha256,
        "base": base.weights_sha256,
        "quality": quality.model_dump(mode="json"),
        "text": common["text_sha256"],
        "job": sha256_file(JOB),
        "env": env.requirements_sha256,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir() / "quality" / f"{quant.model}-{quant.quant}-{key}.json"
    if not cached.is_file():
        # The figure is cached under the manifests' digests: measure only files that still match them.
        require_receipt_intact(base.location, f"base model {base.name}", "its receipt under results/_models/", "model")
        if quant.location != base.location:
            require_receipt_intact(
                quant.location, f"checkpoint {quant.quant}", "its receipt under results/_quants/", "quantize"
            )
        cached.parent.mkdir(parents=True, exist_ok=True)
        spec = cached.with_suffix(".spec.json")
        raw = cached.with_suffix(".raw.json")
        write_json(
            spec,
            {
                "base_dir": base.location,
                "quant_dir": quant.location,
                "text": str(text),
                "window": quality.window,
                "num_windows": quality.num_windows,
                "out": str(raw),
            },
        )
        print(f"[quality] {quant.model} / {quant.quant}: PPL and KLD on {quality.num_windows} x {quality.window} tokens", file=sys.stderr, flush=True)
        try:
            result = subprocess.run([str(env.python_bin), str(JOB), str(spec)], stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                raise RuntimeError(f"quality evaluation of {quant.quant} failed (exit {result.returncode}); see the output above")
            write_json(cached, json.loads(raw.read_text()))
        finally:
            spec.unlink(missing_ok=True)
            raw.unlink(missing_ok=True)
    measured = json.loads(cached.read_text())
    return QualityRecord(
        **common,
        status="ok",
        method=measured["method"],
        ppl=measured["ppl"],
        ppl_base=measured["ppl_base"],
        kld=measured["kld"],
        # Ratio first: identical perplexities give exactly 100, not 99.99999999999999.
        ppl_recovery_pct=100 * (measured["ppl_base"] / measured["ppl"]),
        top1_agreement=measured["top1_agreement"],
        n_tokens=measured["n_tokens"],
        window=measured["window"],
        wall_s=measured["wall_s"],
    )
