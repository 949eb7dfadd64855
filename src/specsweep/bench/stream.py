"""One streamed OpenAI-compatible request, timed the way llama-benchy times it.

Timestamps are taken when a chunk arrives. Under speculative decoding a chunk can carry several
tokens: they are counted from `token_ids` (requested with `"return_token_ids": true`) and their
timestamps spread evenly since the previous token, as llama-benchy does. Without token ids the
count falls back to the usage block, then to a tokenizer, then to one token per chunk; the source
used is recorded.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import aiohttp

from specsweep.bench.stats import RequestTiming


def _spread(result: RequestTiming, chunk_time: float, count: int) -> None:
    if count == 1:
        result.token_timestamps.append(chunk_time)
        return
    last = result.token_timestamps[-1] if result.token_timestamps else result.first_token_ts
    last = result.start_ts if last is None else last
    window = chunk_time - last
    result.token_timestamps.extend(last + window * (i + 1) / count for i in range(count))


def _interpolate(chunk_times: list[float], count: int) -> list[float]:
    if count <= 0 or not chunk_times:
        return []
    first, last = chunk_times[0], chunk_times[-1]
    if count == 1 or len(chunk_times) == 1 or last <= first:
        return [first] * count
    step = (last - first) / (count - 1)
    return [first + step * i for i in range(count)]


def finalize_tokens(
    result: RequestTiming,
    chunks: list[tuple[float, str, list[int] | None]],
    usage_completion_tokens: int | None,
    encode: Callable[[str], list[int]] | None,
) -> None:
    """Token count and per-token timestamps from (arrival time, text, token_ids) chunks."""
    if not chunks:
        if usage_completion_tokens is not None:
            result.total_tokens = usage_completion_tokens
            result.token_source = "usage"
        return
    if all(ids is not None for _, _, ids in chunks):
        for arrived, _, ids in chunks:
            result.total_tokens += len(ids)
            if ids:
                _spread(result, arrived, len(ids))
        result.token_source = "token_ids"
        return
    times = [arrived for arrived, _, _ in chunks]
    if usage_completion_tokens is not None:
        count, source = usage_completion_tokens, "usage"
    elif encode is not None:
        count, source = len(encode("".join(text for _, text, _ in chunks))), "tokenizer"
    else:
        result.total_tokens, result.token_source, result.token_timestamps = len(chunks), "chunks", times
        return
    result.total_tokens, result.token_source = count, source
    result.token_timestamps = _interpolate(times, count)


def _content(choice: dict[str, Any], chat: bool) -> str:
    if not chat:
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""


async def stream(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    chat: bool,
    encode: Callable[[str], list[int]] | None = None,
) -> RequestTiming:
    result = RequestTiming(start_ts=time.perf_counter())
    chunks: list[tuple[float, str, list[int] | None]] = []
    usage_completion_tokens = None
    try:
        async with session.post(url, json=payload, headers=headers) as response:
            if response.status != 200:
                body = (await response.text())[:300]
                result.error = f"HTTP {response.status}: {body}"
                result.end_ts = time.perf_counter()
                return result
            async for raw in response.content:
                arrived = time.perf_counter()
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    result.error = f"malformed SSE data: {data[:120]!r}"
                    break
                spec_stats = (chunk.get("metrics") or {}).get("speculative_decoding")
                if isinstance(spec_stats, dict):
                    result.spec_stats = spec_stats
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    if isinstance(usage.get("prompt_tokens"), int):
                        result.prompt_tokens = usage["prompt_tokens"]
                    if isinstance(usage.get("completion_tokens"), int):
                        usage_completion_tokens = usage["completion_tokens"]
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                if result.first_response_ts is None:
                    result.first_response_ts = arrived
                text = _content(choices[0], chat)
                ids = choices[0].get("token_ids")
                if text or ids:
                    if result.first_token_ts is None:
                        result.first_token_ts = arrived
                    chunks.append((arrived, text, ids if isinstance(ids, list) else None))
    except (aiohttp.ClientError, TimeoutError) as err:
        result.error = f"{type(err).__name__}: {err}"
    result.end_ts = time.perf_counter()
    if result.error is None:
        finalize_tokens(result, chunks, usage_completion_tokens, encode)
        result.text = "".join(text for _, text, _ in chunks)
        result.token_ids = [i for _, _, ids in chunks for i in (ids or [])]
        if result.first_token_ts is None:
            result.error = "stream ended without a generated token"
    return result
