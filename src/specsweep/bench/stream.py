"""One streamed OpenAI-compatible request, timed the way llama-benchy times it.

Timestamps are taken when a chunk arrives. Under speculative decoding a chunk can carry several
tokens: they are counted from `token_ids` (requested with `"return_token_ids": true`) and their
timestamps spread evenly since the previous token, as llama-benchy does. Without token ids the
count falls back to the usage block, then to a tokenizer, then to one token per chunk; the source
used is recorded.

A request that does not end cleanly is a failed request with a short reason in `error` (HTTP status,
malformed SSE, an error event, a stream cut before `[DONE]`, no generated token, the per-request
timeout); the row's statistics leave it out. A stream without a usage block is not a failure (see
`_absorb_usage`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

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


@dataclass
class _Stream:
    """What the SSE events of one response carried so far."""

    chat: bool
    chunks: list[tuple[float, str, list[int] | None]] = field(default_factory=list)
    usage_completion_tokens: int | None = None
    done: bool = False
    events: int = 0


def _decode_event(data: bytes) -> dict[str, Any] | str:
    """The JSON object of one `data:` line, or the reason it is not one."""
    try:
        chunk = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"malformed SSE: a data line is not JSON: {data[:120]!r}"
    if not isinstance(chunk, dict):
        return f"malformed SSE: a data line is not a JSON object: {data[:120]!r}"
    if "error" in chunk:
        # vLLM reports a failure during generation as an error event inside an HTTP 200 stream.
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        return f"server error in stream: {str(message)[:200]}"
    return chunk


def _absorb_usage(result: RequestTiming, state: _Stream, chunk: dict[str, Any]) -> None:
    # A stream without a usage block is degraded, not failed: the generated tokens are still counted
    # exactly from token_ids (or, failing those, from the tokenizer / chunks, as token_source records)
    # and every timestamp is the client's own. Only the server's prompt count is missing, so pp t/s
    # falls back to the bench's planned count and the row counts such requests (requests_without_usage).
    # Failing them would throw away good timings from servers that ignore stream_options.include_usage.
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return
    if isinstance(usage.get("prompt_tokens"), int):
        result.prompt_tokens = usage["prompt_tokens"]
        result.usage_reported = True
    if isinstance(usage.get("completion_tokens"), int):
        state.usage_completion_tokens = usage["completion_tokens"]


def _absorb(result: RequestTiming, state: _Stream, chunk: dict[str, Any], arrived: float) -> None:
    state.events += 1
    spec_stats = (chunk.get("metrics") or {}).get("speculative_decoding")
    if isinstance(spec_stats, dict):
        result.spec_stats = spec_stats
    _absorb_usage(result, state, chunk)
    choices = chunk.get("choices") or []
    if not choices:
        return
    if result.first_response_ts is None:
        result.first_response_ts = arrived
    text = _content(choices[0], state.chat)
    ids = choices[0].get("token_ids")
    if text or ids:
        if result.first_token_ts is None:
            result.first_token_ts = arrived
        state.chunks.append((arrived, text, ids if isinstance(ids, list) else None))


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body's complete lines, however long.

    aiohttp's own line iterator raises LineTooLong past 512 KiB, and with return_token_ids vLLM's first
    chunk lists every prompt token id: past ~80k prompt tokens that one line is longer. A last line cut
    off by the connection closing is dropped, as SSE drops an unfinished event (the missing [DONE] then
    names the fault rather than a half JSON object).
    """
    buffer = b""
    async for block in content.iter_any():
        *lines, buffer = (buffer + block).split(b"\n")
        for line in lines:
            yield line


async def _read_events(response: aiohttp.ClientResponse, result: RequestTiming, state: _Stream) -> str | None:
    """Consume the SSE body; the reason the stream is unusable, or None."""
    async for raw in _lines(response.content):
        arrived = time.perf_counter()
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators, `: keep-alive` comments, `event:` lines
        data = line[5:].strip()
        if data == b"[DONE]":
            state.done = True
            continue
        chunk = _decode_event(data)
        if isinstance(chunk, str):
            return chunk
        _absorb(result, state, chunk, arrived)
    if not state.done:
        return (
            f"stream ended before [DONE]: the server closed the connection after {state.events} events "
            "(did it crash or restart? see its log)"
        )
    return None


async def stream(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    chat: bool,
    encode: Callable[[str], list[int]] | None = None,
) -> RequestTiming:
    """One request; never raises for a server fault, it returns a result with `error` set instead.

    The per-request timeout is the session's total timeout (BenchSettings.request_timeout_s).
    """
    result = RequestTiming(start_ts=time.perf_counter())
    state = _Stream(chat=chat)
    try:
        async with session.post(url, json=payload, headers=headers) as response:
            if response.status != 200:
                body = (await response.read()).decode(errors="replace").strip()
                result.error = f"HTTP {response.status}: {body[:200]}"
            else:
                result.error = await _read_events(response, result, state)
    except TimeoutError:  # asyncio.TimeoutError; aiohttp's own timeout errors derive from it
        limit = f"{session.timeout.total:g} s" if session.timeout.total else "the session's timeout"
        result.error = (
            f"timeout after {limit}: no complete response in time "
            "(raise request_timeout_s / --request-timeout if the server is only slow)"
        )
    except aiohttp.ClientPayloadError as err:
        result.error = f"stream ended before [DONE]: the response body broke off ({err})"
    except aiohttp.ClientError as err:
        result.error = f"{type(err).__name__}: {err}"
    result.end_ts = time.perf_counter()
    if result.error is None:
        finalize_tokens(result, state.chunks, state.usage_completion_tokens, encode)
        result.text = "".join(text for _, text, _ in state.chunks)
        result.token_ids = [i for _, _, ids in state.chunks for i in (ids or [])]
        if result.first_token_ts is None:
            result.error = "empty completion: the stream finished without a generated token (see the server log)"
    return result
