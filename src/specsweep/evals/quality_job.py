"""Perplexity and KL divergence of a quant against its base, full next-token distributions in-process.

Runs inside the quantizer env (it has torch, transformers and compressed-tensors to decompress the quant);
standalone on purpose, like specsweep.quantize.job. Both models see the same token windows (ids cut by
specsweep.evals.windows); per predicted position it takes KL(P_base || P_quant) over the whole vocabulary and
averages, and keeps each side's top-k for the comparisons specsweep.evals.distributions makes.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"[quality] {message}", file=sys.stderr, flush=True)


def load(path: str):
    import torch
    from transformers import AutoModelForCausalLM

    if "quantization_config" not in json.loads((Path(path) / "config.json").read_text()):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    from transformers import CompressedTensorsConfig

    # Decompress to dense weights: the CPU has no kernels for packed int4 / NVFP4 in transformers.
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False)
    )
    return model.float().eval()


def scored(log_probs, targets, top_k: int) -> list[list]:
    """One specsweep.evals.distributions.Position per predicted token."""
    top_values, top_ids = log_probs.topk(top_k, dim=-1)
    target_lp = log_probs.gather(1, targets[:, None])[:, 0]
    return [
        {"target": t, "target_logprob": lp, "top": [list(pair) for pair in zip(ids, values)]}
        for t, lp, ids, values in zip(targets.tolist(), target_lp.tolist(), top_ids.tolist(), top_values.tolist())
    ]


def main() -> None:
    import torch

    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.manual_seed(0)
    started = time.monotonic()
    windows = spec["windows"]
    base = load(spec["base_dir"])
    # Loaded on its own even when it is the base's files: the base's KLD of 0 is then measured between two models,
    # not implied by comparing one object with itself.
    quant = load(spec["quant_dir"])

    nll_base = nll_quant = kld = 0.0
    top1_agree = predicted = 0
    scored_base, scored_quant = [], []
    with torch.inference_mode():
        for index, window in enumerate(windows):
            ids = torch.tensor([window])
            targets = ids[0, 1:]
            base_lp = torch.log_softmax(base(ids).logits[0, :-1].float(), dim=-1)
            quant_lp = torch.log_softmax(quant(ids).logits[0, :-1].float(), dim=-1)
            nll_base -= base_lp.gather(1, targets[:, None]).sum().item()
            nll_quant -= quant_lp.gather(1, targets[:, None]).sum().item()
            kld += (base_lp.exp() * (base_lp - quant_lp)).sum().item()
            top1_agree += (base_lp.argmax(-1) == quant_lp.argmax(-1)).sum().item()
            predicted += len(targets)
            scored_base.append(scored(base_lp, targets, spec["top_k"]))
            scored_quant.append(scored(quant_lp, targets, spec["top_k"]))
            log(f"window {index + 1}/{len(windows)}")

    result = {
        "method": "in_process_full_distribution",
        "n_windows": len(windows),
        "window": len(windows[0]),
        "n_tokens": predicted,
        "ppl_base": math.exp(nll_base / predicted),
        "ppl": math.exp(nll_quant / predicted),
        "kld": kld / predicted,
        "top1_agreement": top1_agree / predicted,
        "wall_s": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(spec["out"]).write_text(json.dumps(result, indent=2, sort_keys=True))
    for name, windows_scored in (("base", scored_base), ("quant", scored_quant)):
        Path(spec[f"scored_{name}"]).write_text(json.dumps({
            "source": "in_process", "windows_sha256": spec["windows_sha256"], "top_k": spec["top_k"],
            "windows": windows_scored,
        }))  # fmt: skip
    log(f"ppl {result['ppl']:.3f} (base {result['ppl_base']:.3f}), kld {result['kld']:.5f}, {result['wall_s']} s")


if __name__ == "__main__":
    main()
