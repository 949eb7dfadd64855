"""llama-benchy 0.4.0's statistics, reproduced exactly so numbers compare with forum tables.

Definitions (llama-benchy `results.py`):
- ttfr = first SSE chunk carrying choices - request start; e2e_ttft = first chunk with content - start;
  est_ppt = max(0, ttfr - latency); pp t/s per request = prompt tokens / est_ppt.
  Prompt tokens are the server's usage count when sent (llama-benchy's 20 % rule is not kept: see
  `prompt_tokens_used`).
- tg t/s per request = tokens after the first token's timestamp / (last token ts - first token ts).
- At concurrency > 1 the "total" row is per batch: pp = Σ prompt tokens / (max first token - min start);
  tg = Σ tokens after each first / (max last token - min first token).
- peak = most tokens in any 1 s sliding window (or tokens / duration when the burst is shorter than 1 s).
- Every metric is mean ± population std (numpy's default) over all values; times are reported in ms.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from specsweep.records.bench import Metric, PromptMismatch, RunMetrics


def metric(values: list[float], multiplier: float = 1.0) -> Metric | None:
    if not values:
        return None
    scaled = [value * multiplier for value in values]
    return Metric(mean=statistics.fmean(scaled), std=statistics.pstdev(scaled), values=scaled)


@dataclass
class RequestTiming:
    """One streamed request as the bench client observed it (perf_counter seconds)."""

    start_ts: float
    end_ts: float = 0.0
    first_response_ts: float | None = None
    first_token_ts: float | None = None
    prompt_tokens: int = 0
    total_tokens: int = 0
    token_timestamps: list[float] = field(default_factory=list)
    error: str | None = None
    token_source: str | None = None
    # What was generated: greedy outputs are compared across cells (drafting must not change them).
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    # vLLM's `metrics.speculative_decoding` (--per-request-spec-decode-metrics), when the server sends it.
    spec_stats: dict | None = None
    # Whether the stream's usage block gave prompt_tokens (without it, prompt_tokens is unknown: 0).
    usage_reported: bool = False


def tokens_after_first(timestamps: list[float]) -> int:
    if len(timestamps) < 2:
        return 0
    return sum(1 for ts in timestamps if ts > timestamps[0])


def peak_throughput(timestamps: list[float], window: float = 1.0) -> float:
    if not timestamps:
        return 0.0
    ordered = sorted(timestamps)
    duration = ordered[-1] - ordered[0]
    if 0 < duration < window:
        # A burst shorter than the window: the windowed count would understate it.
        return len(ordered) / duration
    most = 0
    start = 0
    for end, end_time in enumerate(ordered):
        while start < end and ordered[start] <= end_time - window:
            start += 1
        most = max(most, end - start + 1)
    return most / window


@dataclass
class BatchFigures:
    pp_speeds: list[float] = field(default_factory=list)
    tg_speeds: list[float] = field(default_factory=list)
    ttfr: list[float] = field(default_factory=list)
    est_ppt: list[float] = field(default_factory=list)
    e2e_ttft: list[float] = field(default_factory=list)
    batch_pp: list[float] = field(default_factory=list)
    batch_tg: list[float] = field(default_factory=list)
    peak: list[float] = field(default_factory=list)
    peak_req: list[float] = field(default_factory=list)


def prompt_tokens_used(reported: int, expected: int) -> int:
    """The server's prompt count when it sent one, else the bench's planned count.

    llama-benchy 0.4.0 trusts the server only within 20 % of the planned size and otherwise divides the
    planned size by the time the server spent on its (different) prompt. The server's count is what it
    processed in est_ppt, so pp t/s uses it; a row whose prompts were off by more than 1 % carries a
    `prompt_tokens_mismatch` warning instead (see `prompt_mismatch`).
    """
    return reported if reported > 0 else expected


def prompt_off(server: int, client: int) -> bool:
    """More than 1 % apart, and more than one token: a unique suffix or a word boundary can shift the
    count by one token, which at pp < 100 alone would exceed 1 % without meaning anything."""
    gap = abs(server - client)
    return gap > 0.01 * client and gap > 1


def prompt_mismatch(requests: list[RequestTiming], client_tokens: int) -> PromptMismatch | None:
    """Compare each request's usage.prompt_tokens with the count the bench planned with its tokenizer."""
    counts = [r.prompt_tokens for r in requests if r.error is None and r.prompt_tokens > 0]
    off = [count for count in counts if prompt_off(count, client_tokens)]
    if client_tokens <= 0 or not off:
        return None
    furthest = max(off, key=lambda count: abs(count - client_tokens))
    return PromptMismatch(
        client_tokens=client_tokens,
        server_tokens_min=min(off),
        server_tokens_max=max(off),
        relative_diff=(furthest - client_tokens) / client_tokens,
        requests=len(off),
        checked=len(counts),
    )


def add_batch(figures: BatchFigures, batch: list[RequestTiming], expected_pp_tokens: int, latency: float) -> None:
    # A failed request contributes nothing: no timestamp, no prompt tokens, no span of the batch window.
    valid = [r for r in batch if r.error is None]
    if not valid:
        return
    prompt_total = 0
    all_timestamps: list[float] = []
    first_tokens: list[float] = []
    last_tokens: list[float] = []
    for result in valid:
        all_timestamps.extend(result.token_timestamps)
        if result.token_timestamps:
            figures.peak_req.append(peak_throughput(result.token_timestamps))
            last_tokens.append(result.token_timestamps[-1])
        elif result.end_ts:
            last_tokens.append(result.end_ts)
        prompt_tokens = prompt_tokens_used(result.prompt_tokens, expected_pp_tokens)
        prompt_total += prompt_tokens

        ttfr = est_ppt = 0.0
        if result.first_response_ts is not None:
            ttfr = result.first_response_ts - result.start_ts
            figures.ttfr.append(ttfr)
        if result.first_token_ts is not None:
            first_tokens.append(result.first_token_ts)
            figures.e2e_ttft.append(result.first_token_ts - result.start_ts)
            est_ppt = max(0.0, ttfr - latency)
            figures.est_ppt.append(est_ppt)
        if est_ppt > 0 and prompt_tokens > 0:  # 0: neither the server nor the bench knows the prompt size
            figures.pp_speeds.append(prompt_tokens / est_ppt)
        if result.total_tokens > 1 and len(result.token_timestamps) > 1:
            decode_time = result.token_timestamps[-1] - result.token_timestamps[0]
            decode_tokens = tokens_after_first(result.token_timestamps)
            if decode_time > 0 and decode_tokens > 0:
                figures.tg_speeds.append(decode_tokens / decode_time)

    if first_tokens:
        pp_duration = max(first_tokens) - min(r.start_ts for r in valid)
        if pp_duration > 0 and prompt_total > 0:
            figures.batch_pp.append(prompt_total / pp_duration)
        last = max(last_tokens) if last_tokens else max(r.end_ts for r in valid)
        tg_duration = last - min(first_tokens)
        decoded = sum(tokens_after_first(r.token_timestamps) for r in valid)
        if tg_duration > 0 and decoded > 0:
            figures.batch_tg.append(decoded / tg_duration)
    if all_timestamps:
        figures.peak.append(peak_throughput(all_timestamps))


def run_metrics(batches: list[list[RequestTiming]], concurrency: int, expected_pp_tokens: int, latency: float) -> RunMetrics:
    figures = BatchFigures()
    for batch in batches:
        add_batch(figures, batch, expected_pp_tokens, latency)
    pp_total = metric(figures.batch_pp if concurrency > 1 else figures.pp_speeds)
    tg_total = metric(figures.batch_tg if concurrency > 1 else figures.tg_speeds)
    return RunMetrics(
        pp_throughput=pp_total,
        pp_req_throughput=pp_total if concurrency == 1 else metric(figures.pp_speeds),
        tg_throughput=tg_total,
        tg_req_throughput=tg_total if concurrency == 1 else metric(figures.tg_speeds),
        peak_throughput=metric(figures.peak),
        peak_req_throughput=metric(figures.peak_req),
        ttfr=metric(figures.ttfr, 1000),
        est_ppt=metric(figures.est_ppt, 1000),
        e2e_ttft=metric(figures.e2e_ttft, 1000),
    )
