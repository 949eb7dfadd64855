"""Streaming OpenAI-compatible completions client that counts tokens, not SSE chunks.

Under speculative decoding one chunk can carry several tokens, so tokens are counted from the
`token_ids` vLLM returns with `"return_token_ids": true`, falling back to the usage block, and
only then to chunk counting; the source used is recorded with every result.
"""

from __future__ import annotations

import json
import time
from typing import Literal

import httpx
from pydantic import BaseModel

TokenSource = Literal["token_ids", "usage", "chunks"]


class CompletionResult(BaseModel):
    ok: bool
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    token_source: TokenSource | None = None
    token_ids: list[int] = []
    text: str = ""
    finish_reason: str | None = None
    # Seconds from sending the request.
    ttft_s: float | None = None
    e2e_s: float | None = None
    # llama-benchy's tg t/s: (tokens - 1) / (last token time - first token time).
    tg_tokens_per_s: float | None = None


def _decode_token_count(ids: list[int], usage: dict | None, chunks: int) -> tuple[int, TokenSource]:
    if ids:
        return len(ids), "token_ids"
    if usage and usage.get("completion_tokens") is not None:
        return int(usage["completion_tokens"]), "usage"
    return chunks, "chunks"


def stream_completion(
    client: httpx.Client,
    base_url: str,
    model: str,
    prompt: str,
    max_tokens: int,
    timeout_s: float,
    extra_body: dict | None = None,
) -> CompletionResult:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "return_token_ids": True,
        "stream_options": {"include_usage": True},
        **(extra_body or {}),
    }
    token_ids: list[int] = []
    pieces: list[str] = []
    usage: dict | None = None
    finish_reason = None
    content_chunks = 0
    first_token_at = last_token_at = None
    started = time.perf_counter()
    try:
        with client.stream("POST", f"{base_url}/v1/completions", json=body, timeout=timeout_s) as response:
            if response.status_code != 200:
                detail = response.read().decode(errors="replace")[:500]
                return CompletionResult(ok=False, error=f"HTTP {response.status_code}: {detail}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices", []):
                    ids = choice.get("token_ids") or []
                    text = choice.get("text") or ""
                    if ids or text:
                        now = time.perf_counter()
                        first_token_at = first_token_at or now
                        last_token_at = now
                        content_chunks += 1
                        token_ids.extend(ids)
                        pieces.append(text)
                    finish_reason = choice.get("finish_reason") or finish_reason
    except (httpx.HTTPError, json.JSONDecodeError) as err:
        return CompletionResult(ok=False, error=f"{type(err).__name__}: {err}")
    ended = time.perf_counter()
    count, source = _decode_token_count(token_ids, usage, content_chunks)
    if first_token_at is None:
        return CompletionResult(ok=False, error="stream ended without any generated token")
    decode_s = last_token_at - first_token_at
    return CompletionResult(
        ok=True,
        prompt_tokens=(usage or {}).get("prompt_tokens"),
        completion_tokens=count,
        token_source=source,
        token_ids=token_ids,
        text="".join(pieces),
        finish_reason=finish_reason,
        ttft_s=first_token_at - started,
        e2e_s=ended - started,
        tg_tokens_per_s=(count - 1) / decode_s if count > 1 and decode_s > 0 else None,
    )
