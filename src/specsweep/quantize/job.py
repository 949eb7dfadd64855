"""Quantize one base checkpoint. Runs inside the quantizer env (llmcompressor / auto-round), not specsweep's.

Standalone on purpose: the quantizer env has no specsweep installed, only this file is executed there.
Input is a JSON spec (written by specsweep.quantize.run); output is a compressed-tensors checkpoint in
`out_dir` plus `applied.json` with the recipe as applied, the calibration identity, versions, time and memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from importlib.metadata import version
from pathlib import Path


def log(message: str) -> None:
    print(f"[quantize] {message}", file=sys.stderr, flush=True)


def calibration_windows(tokenizer, calibration: dict) -> tuple[list[list[int]], dict]:
    """`num_samples` windows of `seq_len` tokens, evenly spaced over the text, each starting with <bos>."""
    if calibration["kind"] == "text_file":
        text = Path(calibration["path"]).read_text()
        identity = {"kind": "text_file", "path": calibration["display_path"]}
    else:
        from datasets import load_dataset

        rows = load_dataset(
            calibration["dataset"], calibration.get("config"), split=calibration["split"], revision=calibration["revision"]
        )
        text = "\n\n".join(rows[calibration["text_field"]])
        identity = {key: calibration.get(key) for key in ("kind", "dataset", "config", "split", "revision")}
    identity["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    body = calibration["seq_len"] - 1
    available = len(ids) // body
    wanted = calibration["num_samples"]
    if available < wanted:
        raise SystemExit(
            f"calibration text has {len(ids)} tokens: {available} windows of {calibration['seq_len']}, but "
            f"num_samples is {wanted}; lower num_samples or seq_len, or use a longer text"
        )
    step = available / wanted
    starts = [int(i * step) * body for i in range(wanted)]
    windows = [[tokenizer.bos_token_id, *ids[start : start + body]] for start in starts]
    identity.update(num_samples=wanted, seq_len=calibration["seq_len"], text_tokens=len(ids), window_starts=starts)
    return windows, identity


def quantization_scheme(scheme: str, group_size: int | None):
    from compressed_tensors.quantization import preset_name_to_scheme

    resolved = preset_name_to_scheme(scheme, ["Linear"])
    if group_size is not None:
        resolved.weights.group_size = group_size
    return resolved


def run_llmcompressor(model, tokenizer, spec: dict, out_dir: Path, device: str) -> dict:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    recipe_cfg = spec["recipe"]
    groups = {"group_0": quantization_scheme(recipe_cfg["scheme"], recipe_cfg.get("group_size"))}
    applied: dict = {"config_groups": {name: group.model_dump(mode="json") for name, group in groups.items()}}
    if recipe_cfg["algorithm"] == "gptq":
        windows, calibration = calibration_windows(tokenizer, spec["calibration"])
        modifier = GPTQModifier(
            config_groups=groups,
            ignore=recipe_cfg["ignore"],
            dampening_frac=recipe_cfg["dampening_frac"],
            block_size=recipe_cfg["block_size"],
        )
        dataset = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})
        log(f"GPTQ {recipe_cfg['scheme']}: {len(windows)} calibration windows of {len(windows[0])} tokens")
        oneshot(
            model=model,
            tokenizer=tokenizer,
            dataset=dataset,
            recipe=[modifier],
            num_calibration_samples=len(windows),
            max_seq_length=len(windows[0]),
            shuffle_calibration_samples=False,
        )
    else:
        calibration = None
        modifier = QuantizationModifier(config_groups=groups, ignore=recipe_cfg["ignore"])
        log(f"round-to-nearest {recipe_cfg['scheme']} (data-free)")
        oneshot(model=model, tokenizer=tokenizer, recipe=[modifier])
    applied["modifier"] = type(modifier).__name__
    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)
    return {"applied": applied, "calibration": calibration}


def run_autoround(model, tokenizer, spec: dict, out_dir: Path, device: str) -> dict:
    import torch
    from auto_round import AutoRound

    recipe_cfg = spec["recipe"]
    windows, calibration = calibration_windows(tokenizer, spec["calibration"])
    layer_config = {name: {"bits": 16} for name in recipe_cfg["ignore"]}
    options = dict(
        bits=recipe_cfg["bits"],
        group_size=recipe_cfg["group_size"],
        sym=recipe_cfg["sym"],
        iters=recipe_cfg["iters"],
        nsamples=len(windows),
        seqlen=len(windows[0]),
        batch_size=min(8, len(windows)),
        seed=0,
        device_map=device,
        layer_config=layer_config,
        # Measured on a 2-core CPU: torch.compile and disk offload of blocks only add time for small models.
        enable_torch_compile=False,
        # On the GPU (a 31B base) blocks are loaded as they are tuned, so host memory holds one copy.
        low_cpu_mem_usage=device == "cuda",
    )
    if recipe_cfg.get("lr") is not None:
        options["lr"] = recipe_cfg["lr"]
    log(f"AutoRound W{recipe_cfg['bits']}A16 g{recipe_cfg['group_size']}: {recipe_cfg['iters']} iters, {len(windows)} windows")
    rounder = AutoRound(
        model, tokenizer, dataset=[torch.tensor([w]) for w in windows], **options
    )
    export_root = (out_dir.parent / f"{out_dir.name}.export").resolve()
    rounder.quantize_and_save(str(export_root), format=recipe_cfg["export_format"])
    # auto-round writes into a subdirectory named after the model and scheme. Find it by its config.json
    # strictly inside export_root, and move only from there: its return value is not a reliable path.
    configs = sorted(export_root.rglob("config.json"))
    if len(configs) != 1 or export_root not in configs[0].resolve().parents and configs[0].parent != export_root:
        raise SystemExit(f"auto-round export: expected one checkpoint under {export_root}, found {configs}")
    for item in configs[0].parent.iterdir():
        item.rename(out_dir / item.name)
    tokenizer.save_pretrained(out_dir)
    for runtime_only in ("device_map", "enable_torch_compile", "low_cpu_mem_usage"):
        options.pop(runtime_only)
    return {"applied": {**options, "ignore": recipe_cfg["ignore"], "format": recipe_cfg["export_format"]}, "calibration": calibration}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    threads = int(os.environ.get("SPECSWEEP_QUANT_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    started = time.monotonic()
    # On a GPU (the Spark's quantizer container) the base stays in bfloat16: a 31B model in float32 would not fit
    # its 128 GB; llmcompressor moves each layer to the GPU as it goes, auto-round is given the device. On CPU
    # float32, whose kernels every CPU has.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    log(f"loading base model {spec['base_dir']} ({str(dtype).removeprefix('torch.')}, quantizing on {device})")
    tokenizer = AutoTokenizer.from_pretrained(spec["base_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["base_dir"], dtype=dtype)
    runner = {"llmcompressor": run_llmcompressor, "autoround": run_autoround}[spec["recipe"]["kind"]]
    result = runner(model, tokenizer, spec, out_dir, device)
    result["applied"].update(device=device, dtype=str(dtype).removeprefix("torch."))
    tools = ["torch", "transformers", "compressed-tensors", "llmcompressor", "auto-round"]
    applied = {
        **result,
        "versions": {name: version(name) for name in tools},
        "wall_s": round(time.monotonic() - started, 1),
        # ru_maxrss is KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    (out_dir / "applied.json").write_text(json.dumps(applied, indent=2, sort_keys=True))
    log(f"done in {applied['wall_s']} s, peak RSS {applied['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
