"""Held-out token windows: the exact token ids every quality measurement of a model sees.

Cut once, here, with the model's own tokenizer.json, and handed as ids to both the in-process job and the served
endpoint: the two paths can only be compared if they score the same tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from specsweep.bench.corpus import load_tokenizer


def bos_token_id(model_dir: str) -> int:
    """The BOS id from the model's config (Gemma needs it: without BOS its first predictions are garbage)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    for node in (config, config.get("text_config") or {}):
        if isinstance(node.get("bos_token_id"), int):
            return node["bos_token_id"]
    tokenizer_config = Path(model_dir) / "tokenizer_config.json"
    if tokenizer_config.is_file():
        token = json.loads(tokenizer_config.read_text()).get("bos_token")
        token = token.get("content") if isinstance(token, dict) else token
        if token and (found := load_tokenizer(model_dir).token_to_id(token)) is not None:
            return found
    raise ValueError(f"{model_dir} names no BOS token (config.json bos_token_id, tokenizer_config.json bos_token)")


def heldout_windows(model_dir: str, text_path: Path, window: int, count: int) -> list[list[int]]:
    """`count` windows of `window` tokens (BOS + window-1 text tokens), evenly spaced over the text."""
    ids = load_tokenizer(model_dir).encode(Path(text_path).read_text(encoding="utf-8"), add_special_tokens=False).ids
    body = window - 1
    available = len(ids) // body
    if available < count:
        raise ValueError(
            f"held-out text {text_path} has {len(ids)} tokens: {available} windows of {window}, but {count} are asked; "
            "lower num_windows or window (conf/quality/), or use a longer text"
        )
    step = available / count
    bos = bos_token_id(model_dir)
    return [[bos, *ids[int(i * step) * body : int(i * step) * body + body]] for i in range(count)]


def windows_sha256(windows: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(windows).encode()).hexdigest()
