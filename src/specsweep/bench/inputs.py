"""Bench inputs checked before any request: argparse types and the fit in the served model's context.

Kept free of aiohttp so `specsweep --help` and argument parsing stay cheap.
"""

from __future__ import annotations

import argparse
from itertools import product


class BenchAbort(RuntimeError):
    """The bench cannot start (bad input, server unusable); the message says what and how to fix it."""


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """pp, tg, runs, concurrency: at least 1 (argparse names the flag before this message)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """depth: 0 means no context before the prompt."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (0 = no context), got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def max_model_len(models: list[dict] | None, model: str | None) -> int | None:
    """vLLM's GET /v1/models gives each model a `max_model_len`; None where the server does not say."""
    for entry in models or []:
        if isinstance(entry, dict) and entry.get("id") == model:
            value = entry.get("max_model_len")
            return value if isinstance(value, int) and value > 0 else None
    return None


def check_fits(limit: int | None, depths: list[int], pps: list[int], tgs: list[int]) -> None:
    """Every depth + pp + tg must fit the model's context; the server would reject each such request."""
    if limit is None:
        return
    too_long = [sizes for sizes in product(depths, pps, tgs) if sum(sizes) > limit]
    if not too_long:
        return
    depth, pp, tg = max(too_long, key=sum)
    more = f" (and {len(too_long) - 1} more combinations)" if len(too_long) > 1 else ""
    raise BenchAbort(
        f"depth {depth} + pp {pp} + tg {tg} = {depth + pp + tg} tokens exceed the served model's "
        f"max_model_len {limit} (from GET /v1/models){more}; lower --depth/--pp/--tg so they sum to at most "
        f"{limit}, or restart the server with --max-model-len {depth + pp + tg} or more"
    )
