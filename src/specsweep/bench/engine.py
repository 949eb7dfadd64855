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
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel

from specsweep.bench.corpus import PromptSource
from specsweep.bench.stats import Metric, RequestTiming, run_metrics
from specsweep.bench.stream import stream
from specsweep.metrics.specdecode import SpecDelta, SpecSnapshot, diff, parse

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
    def __init__(self, settings: BenchSettings, prompts: PromptSource) -> None:
        self.settings = settings
        self.prompts = prompts
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

    async def one_test(
        self, session: aiohttp.ClientSession, depth: int, pp: int, tg: int, concurrency: int, latency: float
    ) -> BenchRow:
        before = await self.snapshot(session)
        batches: list[list[RequestTiming]] = []
        for run in range(self.settings.runs):
            pairs = [
                self.prompts.generate(pp, depth, unique=not self.settings.prefix_caching) for _ in range(concurrency)
            ]
            batch = await asyncio.gather(
                *(
                    stream(session, self.url, self.payload(c, p, tg), self.headers, self.chat, self.prompts.encode)
                    for c, p in pairs
                )
            )
            batches.append(list(batch))
            done = [r for r in batch if r.error is None]
            print(
                f"[bench] pp{pp} tg{tg} d{depth} c{concurrency} run {run + 1}/{self.settings.runs}: "
                f"{len(done)}/{len(batch)} ok",
                file=sys.stderr,
                flush=True,
            )
        after = await self.snapshot(session)
        everything = [r for batch in batches for r in batch]
        failed = [r for r in everything if r.error is not None]
        metrics = run_metrics(batches, concurrency, pp, latency)
        return BenchRow(
            concurrency=concurrency,
            context_size=depth,
            prompt_size=pp,
            response_size=tg,
            **metrics.model_dump(),
            acceptance=diff(before, after) if before and after else None,
            errors=RowErrors(failed=len(failed), total=len(everything), messages=sorted({r.error for r in failed})[:5]),
            token_count_source=sorted({r.token_source for r in everything if r.token_source}),
        )

    async def run(self) -> BenchReport:
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=max(self.settings.concurrency) + 2)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            if self.settings.model is None:
                self.settings = self.settings.model_copy(update={"model": await self.detect_model(session)})
            latency = await self.latency(session)
            if self.settings.warmup:
                await stream(session, self.url, self.payload("", "Warmup " * 10, 1), self.headers, self.chat)
            rows = [
                await self.one_test(session, depth, pp, tg, concurrency, latency)
                for depth in self.settings.depth
                for pp in self.settings.pp
                for tg in self.settings.tg
                for concurrency in self.settings.concurrency
            ]
        return BenchReport(
            version=BENCH_VERSION,
            timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            latency_mode=self.settings.latency_mode,
            latency_ms=latency * 1000,
            model=self.settings.model or "",
            prefix_caching_enabled=self.settings.prefix_caching,
            max_concurrency=max(self.settings.concurrency),
            benchmarks=rows,
        )
