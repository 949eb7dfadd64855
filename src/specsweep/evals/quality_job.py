"""Perplexity and KL divergence of a quant against its base, full next-token distributions in-process.

Runs inside the quantizer env (it has torch, transformers and compressed-tensors to decompress the quant);
standalone on purpose, like specsweep.quantize.job. Both models see the same token windows of a held-out
text; per predicted position it takes KL(P_base || P_quant) over the whole vocabulary and averages.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import sys
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"[quality] {message}", file=sys.stderr, flush=True)


def token_windows(tokenizer, text: str, window: int, count: int) -> tuple[list[list[int]], int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    body = window - 1
    available = len(ids) // body
    if available < count:
        raise SystemExit(
            f"held-out text has {len(ids)} tokens: {available} windows of {window}, but num_windows is {count}; "
            "lower quality.num_windows or quality.window, or use a longer text"
        )
    step = available / count
    starts = [int(i * step) * body for i in range(count)]
    return [[tokenizer.bos_token_id, *ids[start : start + body]] for start in starts], len(ids)


def load(path: str, quantized: bool):
    import torch
    from transformers import AutoModelForCausalLM

    if not quantized:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    from transformers import CompressedTensorsConfig

    # Decompress to dense weights: the CPU has no kernels for packed int4 / NVFP4 in transformers.
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False)
    )
    return model.float().eval()


def main() -> None:
    import torch
    from transformers import AutoTokenizer

    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.manual_seed(0)
    started = time.monotonic()
    text = Path(spec["text"]).read_text()
    tokenizer = AutoTokenizer.from_pretrained(spec["base_dir"])
    windows, text_tokens = token_windows(tokenizer, text, spec["window"], spec["num_windows"])
    same_weights = spec["quant_dir"] == spec["base_dir"]
    base = load(spec["base_dir"], quantized=False)
    quant = base if same_weights else load(spec["quant_dir"], quantized=True)

    nll_base = nll_quant = kld = 0.0
    top1_agree = predicted = 0
    with torch.inference_mode():
        for index, window in enumerate(windows):
            ids = torch.tensor([window])
            targets = ids[0, 1:]
            base_lp = torch.log_softmax(base(ids).logits[0, :-1].float(), dim=-1)
            quant_lp = base_lp if same_weights else torch.log_softmax(quant(ids).logits[0, :-1].float(), dim=-1)
            nll_base -= base_lp.gather(1, targets[:, None]).sum().item()
            nll_quant -= quant_lp.gather(1, targets[:, None]).sum().item()
            if not same_weights:
                kld += (base_lp.exp() * (base_lp - quant_lp)).sum().item()
            top1_agree += (base_lp.argmax(-1) == quant_lp.argmax(-1)).sum().item()
            predicted += len(targets)
            log(f"window {index + 1}/{len(windows)}")

    result = {
        "method": "in_process_full_distribution",
        "n_windows": len(windows),
        "window": spec["window"],
        "n_tokens": predicted,
        "text_tokens": text_tokens,
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "ppl_base": math.exp(nll_base / predicted),
        "ppl": math.exp(nll_quant / predicted),
        # Identical weights give identical distributions: KL is exactly 0, not a float-noise estimate.
        "kld": 0.0 if same_weights else kld / predicted,
        "top1_agreement": top1_agree / predicted,
        "wall_s": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(spec["out"]).write_text(json.dumps(result, indent=2, sort_keys=True))
    log(f"ppl {result['ppl']:.3f} (base {result['ppl_base']:.3f}), kld {result['kld']:.5f}, {result['wall_s']} s")


if __name__ == "__main__":
    main()
