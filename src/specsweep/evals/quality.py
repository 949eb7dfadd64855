"""Quality per quant, once per quant (not per cell), in-process: perplexity, KL divergence vs the base, recovery %.

Local checkpoints (the embedded path, and any quant this project builds) are measured here on full next-token
distributions by `quality_job.py` in the quantizer env; each side's top-k per position is kept, so the served
endpoint's figures (specsweep.evals.endpoint, any checkpoint vLLM can serve, hub quants of a 31B model included)
can be checked against these. Hub checkpoints are measured only through the endpoint: their record here says
`not_measured` and why.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from specsweep.atomic import write_json
from specsweep.cache_check import require_receipt_intact, sha256_file
from specsweep.config.schema import QualityCfg
from specsweep.envs import model_tools_env
from specsweep.evals.distributions import ScoredWindows, compare
from specsweep.evals.windows import heldout_windows, windows_sha256
from specsweep.exit_status import describe_exit
from specsweep.paths import cache_dir, project_relative
from specsweep.records.model import ModelRecord
from specsweep.records.quality import QualityRecord
from specsweep.records.quant import QuantRecord

JOB = Path(__file__).with_name("quality_job.py")


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
            reason=f"{quant.manifest.repo_id or quant.location} is a hub checkpoint: measured through its served "
            "endpoint only (eval.endpoint_quality, the evals table)",
        )
    if not quality.in_process:
        return QualityRecord(
            **common,
            status="not_measured",
            reason=f"quality.in_process is false for {quant.model} ({quality.name}): measured through the served endpoint "
            "only (eval.endpoint_quality, the evals table)",
        )
    windows = heldout_windows(base.location, text, quality.window, quality.num_windows)
    digest = windows_sha256(windows)
    env = model_tools_env()
    identity = {
        "quant": quant.location,
        "files": quant.manifest.files_sha256 or base.weights_sha256,
        "base": base.weights_sha256,
        "quality": quality.model_dump(mode="json"),
        "windows": digest,
        "job": sha256_file(JOB),
        "env": env.requirements_sha256,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir() / "quality" / f"{quant.model}-{quant.quant}-{key}.json"
    scored = {side: cached.with_suffix(f".{side}.scored.json") for side in ("base", "quant")}
    if not (cached.is_file() and all(path.is_file() for path in scored.values())):
        # The figure is cached under the manifests' digests: measure only files that still match them.
        require_receipt_intact(base.location, f"base model {base.name}", "its receipt under results/_models/", "model")
        if quant.location != base.location:
            require_receipt_intact(
                quant.location, f"checkpoint {quant.quant}", "its receipt under results/_quants/", "quantize"
            )
        cached.parent.mkdir(parents=True, exist_ok=True)
        spec = cached.with_suffix(".spec.json")
        raw = cached.with_suffix(".raw.json")
        staged = {side: path.with_suffix(".part") for side, path in scored.items()}
        write_json(
            spec,
            {
                "base_dir": base.location,
                "quant_dir": quant.location,
                "windows": windows,
                "windows_sha256": digest,
                "top_k": quality.top_k,
                "out": str(raw),
                **{f"scored_{side}": str(path) for side, path in staged.items()},
            },
        )
        print(f"[quality] {quant.model} / {quant.quant}: PPL and KLD on {quality.num_windows} x {quality.window} tokens", file=sys.stderr, flush=True)
        try:
            result = subprocess.run([str(env.python_bin), str(JOB), str(spec)], stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                raise RuntimeError(f"quality evaluation of {quant.quant} failed ({describe_exit(result.returncode)}); see the output above")
            for side, path in staged.items():
                path.replace(scored[side])
            write_json(cached, json.loads(raw.read_text()))
        finally:
            for path in (spec, raw, *staged.values()):
                path.unlink(missing_ok=True)
    measured = json.loads(cached.read_text())
    topk = compare(*(ScoredWindows.model_validate_json(scored[side].read_text()) for side in ("base", "quant")))
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
        kld_topk=topk.kld_topk,
        top_k=topk.top_k,
        n_tokens=measured["n_tokens"],
        window=measured["window"],
        windows_sha256=digest,
        scored=str(scored["quant"]),
        wall_s=measured["wall_s"],
    )
