"""The llama-benchy-compatible test loop: depth x pp x tg x concurrency, `runs` times each.

Each test snapshots the server's spec-decode counters before and after, so every row carries the
acceptance measured over exactly its own requests.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import aiohttp
from pydantic import BaseModel

from specsweep.bench.corpus import PromptSource
from specsweep.bench.stats import Metric, RequestTiming, run_metrics
from specsweep.bench.stream import stream
from specsweep.metrics.specdecode import SpecDelta, SpecSnapshot, diff, from_request_stats, parse

BENCH_VERSION = "0.4.0"  # the llama-benchy JSON schema these reports follow


class BenchSettings(BaseModel):
    base_url: str
    api_key: str | None = None
    model: str | None = None
    pp: list[int] = [2048]
    tg: list[int] = [32]
    depth: list[int] = [0]
    runs: int = 3
    concurrency: list[int] = [1]
    latency_mode: Literal["api", "generation", "none"] = "api"
    warmup: bool = True
    endpoint: Literal["chat", "completions"] = "chat"
    exact_tg: bool = True
    prefix_caching: bool = False
    # llama-benchy's --adapt-prompt: shrink the text by the chat template's own tokens so the server sees pp.
    adapt_prompt: bool = True
    request_timeout_s: float = 600
    extra_body: dict[str, Any] = {}


class RowErrors(BaseModel):
    failed: int
    total: int
    messages: list[str]


class BenchRow(BaseModel):
    concurrency: int
    context_size: int
    prompt_size: int
    response_size: int
    is_context_prefill_phase: bool = False
    pp_throughput: Metric | None
    pp_req_throughput: Metric | None
    tg_throughput: Metric | None
    tg_req_throughput: Metric | None
    peak_throughput: Metric | None
    peak_req_throughput: Metric | None
    ttfr: Metric | None
    est_ppt: Metric | None
    e2e_ttft: Metric | None
    # specsweep's additions to llama-benchy's schema.
    acceptance: SpecDelta | None
    errors: RowErrors
    token_count_source: list[str]


class BenchReport(BaseModel):
    version: str
    timestamp: str
    latency_mode: str
    latency_ms: float
    model: str
    prefix_caching_enabled: bool
    max_concurrency: int
    benchmarks: list[BenchRow]


def server_root(base_url: str) -> str:
    """`http://host:port/v1` -> `http://host:port` (where vLLM serves /metrics)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class Bench:
    def __init__(self, settings: BenchSettings, prompts: PromptSource | None = None) -> None:
        self.settings = settings
        self.prompts = prompts
        self.encode = prompts.encode if prompts else None
        self.latency_s = 0.0
        # Template tokens the server adds around a user prompt / around a system context (from the warmup).
        self.delta_user = 0
        self.delta_context = 0
        self.headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.chat = settings.endpoint == "chat"
        self.url = f"{settings.base_url.rstrip('/')}/{'chat/completions' if self.chat else 'completions'}"

    def payload(self, context: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "max_tokens": max_tokens,
            "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.0,
        }
        if self.chat:
            messages = [{"role": "system", "content": context}] if context else []
            body["messages"] = [*messages, {"role": "user", "content": prompt or "."}]
        else:
            body["prompt"] = context + prompt
        if self.settings.exact_tg:
            body["min_tokens"] = max_tokens
            body["ignore_eos"] = True
        return {**body, **self.settings.extra_body}

    async def detect_model(self, session: aiohttp.ClientSession) -> str:
        async with session.get(f"{self.settings.base_url.rstrip('/')}/models", headers=self.headers) as response:
            response.raise_for_status()
            models = (await response.json()).get("data") or []
        if not models:
            raise RuntimeError(f"{self.settings.base_url}/models lists no model; pass --model")
        return models[0]["id"]

    async def latency(self, session: aiohttp.ClientSession) -> float:
        """Mean of three round trips, subtracted from ttfr to estimate prompt processing time."""
        mode = self.settings.latency_mode
        if mode == "none":
            return 0.0
        samples = []
        for _ in range(3):
            started = time.perf_counter()
            if mode == "api":
                async with session.get(f"{self.settings.base_url.rstrip('/')}/models", headers=self.headers) as r:
                    await r.read()
                samples.append(time.perf_counter() - started)
            else:
                result = await stream(session, self.url, self.payload("", "hello", 1), self.headers, self.chat)
                if result.first_response_ts is not None:
                    samples.append(result.first_response_ts - result.start_ts)
        return statistics.fmean(samples) if samples else 0.0

    async def snapshot(self, session: aiohttp.ClientSession) -> SpecSnapshot | None:
        try:
            async with session.get(f"{server_root(self.settings.base_url)}/metrics") as response:
                if response.status != 200:
                    return None
                return parse(await response.text())
        except aiohttp.ClientError:
            return None

    async def measure(
        self,
        session: aiohttp.ClientSession,
        label: str,
        payloads: Callable[[], list[dict[str, Any]]],
        concurrency: int,
        sizes: tuple[int, int, int],
        expected_pp_tokens: int | None = None,
    ) -> tuple[BenchRow, list[RequestTiming]]:
        """`runs` batches of `concurrency` simultaneous requests, counters snapshotted around them all."""
        depth, pp, tg = sizes
        before = await self.snapshot(session)
        batches: list[list[RequestTiming]] = []
        for run in range(self.settings.runs):
            batch = await asyncio.gather(
                *(stream(session, self.url, body, self.headers, self.chat, self.encode) for body in payloads())
            )
            batches.append(list(batch))
            done = [r for r in batch if r.error is None]
            tokens = sum(r.total_tokens for r in done)
            print(
                f"[bench] {label} run {run + 1}/{self.settings.runs}: {len(done)}/{len(batch)} ok, {tokens} tokens",
                file=sys.stderr,
                flush=True,
            )
        after = await self.snapshot(session)
        everything = [r for batch in batches for r in batch]
        failed = [r for r in everything if r.error is not None]
        if expected_pp_tokens is None:
            # Task prompts are fixed text: the server's own count is the prompt size.
            expected_pp_tokens = next((r.prompt_tokens for r in everything if r.prompt_tokens), 0)
        metrics = run_metrics(batches, concurrency, expected_pp_tokens, self.latency_s)
        ok = [r for r in everything if r.error is None]
        if ok and all(r.spec_stats for r in ok):
            acceptance = from_request_stats([r.spec_stats for r in ok])
        else:
            acceptance = diff(before, after) if before and after else None
        row = BenchRow(
            concurrency=concurrency,
            context_size=depth,
            prompt_size=pp or expected_pp_tokens,
            response_size=tg,
            **metrics.model_dump(),
            acceptance=acceptance,
            errors=RowErrors(failed=len(failed), total=len(everything), messages=sorted({r.error for r in failed})[:5]),
            token_count_source=sorted({r.token_source for r in everything if r.token_source}),
        )
        return row, everything

    async def synthetic(
        self, session: aiohttp.ClientSession, depth: int, pp: int, tg: int, concurrency: int
    ) -> BenchRow:
        """llama-benchy's test: prompts of exactly pp tokens after depth tokens of context."""
        if self.prompts is None:
            raise ValueError("pp/tg tests need a tokenizer to cut prompts (PromptSource)")

        text_pp, text_depth = pp, depth
        if self.settings.adapt_prompt:
            if depth == 0:
                text_pp = max(1, pp - self.delta_user)
            else:
                text_depth = max(1, depth - self.delta_context)
        sources = self.prompts

        def payloads() -> list[dict[str, Any]]:
            unique = not self.settings.prefix_caching
            pairs = [sources.generate(text_pp, text_depth, unique=unique) for _ in range(concurrency)]
            return [self.payload(context, prompt, tg) for context, prompt in pairs]

        if self.settings.warmup:
            # One unmeasured batch of the same shape first, as llama-benchy does.
            await asyncio.gather(*(stream(session, self.url, body, self.headers, self.chat) for body in payloads()))
        row, _ = await self.measure(session, f"pp{pp} tg{tg} d{depth} c{concurrency}", payloads, concurrency,
                                    (depth, pp, tg), expected_pp_tokens=text_pp)  # fmt: skip
        return row

    async def task(
        self, session: aiohttp.ClientSession, name: str, prompt: str, max_tokens: int, concurrency: int
    ) -> tuple[BenchRow, list[RequestTiming]]:
        """A task workload: the same real prompt in every request, generation capped at max_tokens."""
        body = self.payload("", prompt, max_tokens)
        return await self.measure(
            session, f"{name} c{concurrency}", lambda: [dict(body) for _ in range(concurrency)], concurrency,
            (0, 0, max_tokens),
        )  # fmt: skip

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Model name, latency and warmup, once per session, before any measured request."""
        if self.settings.model is None:
            self.settings = self.settings.model_copy(update={"model": await self.detect_model(session)})
        self.latency_s = await self.latency(session)
        if self.settings.warmup:
            await self.warmup(session)

    async def warmup(self, session: aiohttp.ClientSession) -> None:
        """First requests, unmeasured; they also tell how many tokens the server adds to a prompt."""
        text = "Warmup " * 10
        user = await stream(session, self.url, self.payload("", text, 1), self.headers, self.chat)
        if user.error:
            raise RuntimeError(f"warmup request failed: {user.error}; is {self.settings.base_url} serving?")
        if self.encode is None or not user.prompt_tokens:
            return
        local = len(self.encode(text))
        self.delta_user = user.prompt_tokens - local
        self.delta_context = self.delta_user
        if self.chat:
            probe = await stream(session, self.url, self.payload(text, ".", 1), self.headers, self.chat)
            if probe.prompt_tokens:
                self.delta_context = probe.prompt_tokens - local - len(self.encode("."))
        print(f"[bench] server adds {self.delta_user} tokens to a prompt, {self.delta_context} to a context",
              file=sys.stderr)  # fmt: skip

    def session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=max(self.settings.concurrency) + 2)
        return aiohttp.ClientSession(timeout=timeout, connector=connector)

    def report(self, rows: list[BenchRow]) -> BenchReport:
        return BenchReport(
            version=BENCH_VERSION,
            timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            latency_mode=self.settings.latency_mode,
            latency_ms=self.latency_s * 1000,
            model=self.settings.model or "",
            prefix_caching_enabled=self.settings.prefix_caching,
            max_concurrency=max(self.settings.concurrency),
            benchmarks=rows,
        )

    async def run(self) -> BenchReport:
        async with self.session() as session:
            await self.start(session)
            rows = [
                await self.synthetic(session, depth, pp, tg, concurrency)
                for depth in self.settings.depth
                for pp in self.settings.pp
                for tg in self.settings.tg
                for concurrency in self.settings.concurrency
            ]
        return self.report(rows)
