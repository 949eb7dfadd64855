"""Prompts of an exact token length cut from a real text the project ships (never downloaded)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from tokenizers import Tokenizer

from specsweep.paths import project_root

DEFAULT_TEXT = "data/text/alice.txt"


def load_tokenizer(path: str) -> Tokenizer:
    """A local tokenizer.json, or a model dir holding one (no hub look-ups)."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / "tokenizer.json"
    if not candidate.is_file():
        raise FileNotFoundError(
            f"no tokenizer.json at {path}; pass --tokenizer with a model dir or tokenizer.json file"
        )
    return Tokenizer.from_file(str(candidate))


class PromptSource:
    """Context + prompt pairs like llama-benchy's: random windows of the tokenized text."""

    def __init__(self, tokenizer: Tokenizer, text_path: str | Path | None = None, seed: int | None = None) -> None:
        path = Path(text_path) if text_path else project_root() / DEFAULT_TEXT
        self.text_path = path
        self.tokenizer = tokenizer
        self.tokens = tokenizer.encode(path.read_text(encoding="utf-8"), add_special_tokens=False).ids
        # Unseeded by default: a repeated invocation must not replay prompts the server has cached.
        self.random = random.Random(seed)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def generate(self, prompt_tokens: int, context_tokens: int = 0, unique: bool = True) -> tuple[str, str]:
        """(context, prompt). `unique` appends a random id so no two requests share a cached prefix."""
        suffix = f" {uuid.UUID(int=self.random.getrandbits(128))}" if unique else ""
        text_tokens = max(0, prompt_tokens - (len(self.encode(suffix)) if suffix else 0))
        needed = text_tokens + context_tokens
        pool = self.tokens
        if len(pool) <= needed:
            pool = pool * (needed // len(pool) + 2)
        start = self.random.randrange(0, len(pool) - needed)
        window = pool[start : start + needed]
        context = self.decode(window[:context_tokens]) if context_tokens else ""
        return context, self.decode(window[context_tokens:]) + suffix
