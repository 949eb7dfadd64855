"""Convert a Gemma-3 GGUF into an HF safetensors dir that vLLM can serve.

Runs inside the prepare environment (torch, transformers, gguf, sentencepiece), not the
orchestrator: it imports nothing from specsweep. Usage:

    python gguf_to_hf.py GGUF OUT_DIR --dtype float32 --eos 1 106 --check-text T --check-ids 2 9259 ...

The tokenizer transformers derives from this GGUF is wrong (a Unigram model that splits into
single characters after reload, no <bos>), so it is rebuilt as the SentencePiece BPE model Gemma
uses, from the GGUF's own vocabulary, scores and token types.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

WHITESPACE_MARK = "\u2581"


def log(message: str) -> None:
    print(f"[gguf_to_hf] {message}", flush=True)


def read_gguf_vocab(gguf_path: Path) -> tuple[list[str], list[float], list[int]]:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))

    def field(name: str):
        entry = reader.fields.get(name)
        if entry is None:
            raise SystemExit(f"{gguf_path} has no {name}: not a SentencePiece-vocab GGUF")
        return entry

    tokens_field = field("tokenizer.ggml.tokens")
    tokens = [bytes(tokens_field.parts[i]).decode("utf-8") for i in tokens_field.data]
    scores_field = field("tokenizer.ggml.scores")
    scores = [float(scores_field.parts[i][0]) for i in scores_field.data]
    types_field = field("tokenizer.ggml.token_type")
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    return tokens, scores, types


def build_sentencepiece_model(tokens: list[str], scores: list[float], types: list[int]) -> bytes:
    from sentencepiece import sentencepiece_model_pb2 as spm

    model = spm.ModelProto()
    model.trainer_spec.model_type = spm.TrainerSpec.BPE
    model.trainer_spec.vocab_size = len(tokens)
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.split_digits = True
    model.trainer_spec.unk_id = 3
    model.trainer_spec.bos_id = 2
    model.trainer_spec.eos_id = 1
    model.trainer_spec.pad_id = 0
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = False
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    for text, score, token_type in zip(tokens, scores, types):
        piece = model.pieces.add()
        # GGUF keeps whitespace-only pieces as literal spaces; SentencePiece expects its space mark.
        piece.piece = text.replace(" ", WHITESPACE_MARK) if text.strip() == "" and " " in text else text
        piece.score = score
        # GGUF token types use SentencePiece's numbering (1 normal .. 6 byte).
        piece.type = token_type
    return model.SerializeToString()


def convert(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GemmaTokenizer

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gguf_path = Path(args.gguf)

    started = time.monotonic()
    log(f"dequantizing {gguf_path.name} with transformers (about 30 s)")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=getattr(torch, args.dtype)
    )
    # The weights are now dense; keeping the GGUF quantizer would make save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.eos_token_id = list(args.eos)
    model.generation_config.eos_token_id = list(args.eos)
    model.save_pretrained(str(out), safe_serialization=True)
    log(f"saved weights in {time.monotonic() - started:.0f} s")

    tokens, scores, types = read_gguf_vocab(gguf_path)
    (out / "tokenizer.model").write_bytes(build_sentencepiece_model(tokens, scores, types))
    tokenizer = GemmaTokenizer.from_pretrained(str(out), add_bos_token=True, add_eos_token=False)
    tokenizer.save_pretrained(str(out))

    reloaded = GemmaTokenizer.from_pretrained(str(out))
    ids = reloaded(args.check_text)["input_ids"]
    if ids != list(args.check_ids):
        raise SystemExit(
            f"tokenizer check failed: {args.check_text!r} -> {ids}, expected {list(args.check_ids)}; "
            "the GGUF vocabulary does not match the SentencePiece rebuild"
        )
    log(f"tokenizer check passed: {args.check_text!r} -> {ids}")
    (out / "conversion.json").write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "transformers": __import__("transformers").__version__,
                "gguf": __import__("gguf").__version__ if hasattr(__import__("gguf"), "__version__") else None,
                "dtype": args.dtype,
                "tokenizer_check_ids": ids,
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--eos", type=int, nargs="+", required=True)
    parser.add_argument("--check-text", required=True)
    parser.add_argument("--check-ids", type=int, nargs="+", required=True)
    convert(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
