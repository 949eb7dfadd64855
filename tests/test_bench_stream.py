"""Token counting and per-token timestamps from streamed chunks (llama-benchy's rules)."""

from __future__ import annotations

import pytest

from specsweep.bench.stats import RequestTiming, tokens_after_first
from specsweep.bench.stream import finalize_tokens


def timing() -> RequestTiming:
    return RequestTiming(start_ts=0.0, first_token_ts=1.0)


def test_token_ids_count_every_token_and_spread_multi_token_chunks() -> None:
    result = timing()
    chunks = [(1.0, "a", [1]), (1.4, "bcd e", [2, 3, 4, 5]), (1.5, "f", [6])]
    finalize_tokens(result, chunks, usage_completion_tokens=99, encode=None)
    assert result.total_tokens == 6 and result.token_source == "token_ids"
    assert result.token_timestamps == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])


def test_first_chunk_with_several_tokens_shares_one_timestamp() -> None:
    # Decode speed must not count tokens that arrived together with the first one.
    result = timing()
    finalize_tokens(result, [(1.0, "ab", [1, 2]), (2.0, "cd", [3, 4])], None, None)
    assert result.token_timestamps == pytest.approx([1.0, 1.0, 1.5, 2.0])
    assert tokens_after_first(result.token_timestamps) == 2


def test_usage_fallback_interpolates_between_first_and_last_chunk() -> None:
    result = timing()
    finalize_tokens(result, [(1.0, "ab", None), (2.0, "cd", None)], usage_completion_tokens=5, encode=None)
    assert result.total_tokens == 5 and result.token_source == "usage"
    assert result.token_timestamps == pytest.approx([1.0, 1.25, 1.5, 1.75, 2.0])


def test_tokenizer_fallback_when_no_ids_and_no_usage() -> None:
    result = timing()
    finalize_tokens(result, [(1.0, "ab", None), (2.0, "cde", None)], None, encode=lambda text: list(text))
    assert result.total_tokens == 5 and result.token_source == "tokenizer"


def test_chunk_counting_is_the_last_resort() -> None:
    result = timing()
    finalize_tokens(result, [(1.0, "ab", None), (2.0, "cd", None)], None, None)
    assert result.total_tokens == 2 and result.token_source == "chunks"


def test_no_content_chunks_but_usage() -> None:
    result = timing()
    finalize_tokens(result, [], usage_completion_tokens=3, encode=None)
    assert result.total_tokens == 3 and result.token_source == "usage"


def test_prompt_windows_differ_between_sources_unless_seeded(root) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from specsweep.bench.corpus import PromptSource

    text = root / "data/text/alice.txt"
    words = sorted(set(text.read_text().split()))
    vocab = {"[UNK]": 0, **{word: index + 1 for index, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    a, b = PromptSource(tokenizer, text), PromptSource(tokenizer, text)
    assert a.generate(64, 0, unique=False)[1] != b.generate(64, 0, unique=False)[1]
    seeded = PromptSource(tokenizer, text, seed=1).generate(64, 0, unique=False)
    assert seeded == PromptSource(tokenizer, text, seed=1).generate(64, 0, unique=False)
