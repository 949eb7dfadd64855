"""Did you mean": the valid choices a mistyped word is close to."""

from __future__ import annotations

import difflib


def close_to(word: str, choices) -> list[str]:
    """Choices the word starts (nvfp4 -> nvfp4a16) or is a typo of (gemma_mpt -> gemma_mtp), closest first."""
    choices = sorted(set(map(str, choices)))
    prefixed = [choice for choice in choices if choice.startswith(word) and choice != word]
    similar = difflib.get_close_matches(word, choices, n=3, cutoff=0.8)
    return list(dict.fromkeys([*similar, *prefixed]))[:3]


def did_you_mean(word: str, choices, show=str) -> str:
    """' (did you mean X?)' for the closest choices, or ''."""
    close = close_to(word, choices)
    return f" (did you mean {' or '.join(show(choice) for choice in close)}?)" if close else ""
