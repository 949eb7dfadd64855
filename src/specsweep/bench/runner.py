"""The llama-benchy-compatible test loop: depth x pp x tg x concurrency, `runs` times each.

Each test snapshots the server's spec-decode counters before and after, so every row carries the
acceptance measured over exactly its own requests.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import aiohttp
from pydantic import BaseModel, Field, NonNegativeInt, PositiveFloat, PositiveInt

from specsweep.bench.corpus import PromptSource
from specsweep.bench.inputs import BenchAbort, check_fits, max_model_len
from specsweep.bench.specdecode import SpecSnapshot, diff, from_request_stats, parse
from specsweep.bench.stats import RequestTiming, prompt_mismatch, run_metrics
from specsweep.bench.stream import stream
from specsweep.records.bench import BenchRow, PromptMismatch, RowErrors

BENCH_VERSION = "0.4.0"  # the llama-benchy JSON schema these reports follow


class BenchSettings(BaseModel):
    base_url: str
    api_key: str | None = None
    model: str | None = None
    pp: list[PositiveInt] = Field(default=[2048], min_length=1)
    tg: list[PositiveInt] = Field(default=[32], min_length=1)
    depth: list[NonNegativeInt] = Field(default=[0], min_length=1)
    runs: PositiveInt = 3
    concurrency: list[PositiveInt] = Field(default=[1], min_length=1)
    latency_mode: Literal["api", "generation", "none"] = "api"
    warmup: bool = True
    endpoint: Literal["chat", "completions"] = "chat"
    exact_tg: bool = True
    prefix_caching: bool = False
    # Task workloads: each request's prompt starts with a marker of its own, so a server with prefix caching prefills
    # every request (the same prompt each time would make pp and TTFT measure cache hits). llama-benchy's --no-cache
    # appends a uuid4 nonce; at the start it also breaks the cache's chained block hashes from the first block on.
    unique_prompts: bool = True
    # The markers' run id: fixed for a cell (its fresh server has seen no marker; the same prompts in every rerun);
    # None: a random one, for a server that may have served an earlier bench.
    nonce: str | None = None
    # llama-benchy's --adapt-prompt: shrink the text by the chat template's own tokens so the server sees pp.
    adapt_prompt: bool = True
    # Per request, from sending it to its last byte (the session's total timeout).
    request_timeout_s: PositiveFloat = 600
    extra_body: dict[str, Any] = {}


class BenchReport(BaseModel):
    version: str
    timestamp: str
    latency_mode: str
    latency_ms: float
    model: str
    prefix_caching_enabled: bool
    max_concurrency: int
    benchmarks: list[BenchRow]


def error_messages(failed: list[RequestTiming], keep: int = 5) -> list[str]:
    counts = Counter(r.error for r in failed if r.error)
    return [reason if n == 1 else f"{reason} (x{n})" for reason, n in counts.most_common(keep)]


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
        # The served model's context length from GET /v1/models (None where the server does not say).
        self.max_model_len: int | None = None
        # Template tokens the server adds around a user prompt / around a system context (from the warmup).
        self.delta_user = 0
        self.delta_context = 0
        self.headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.chat = settings.endpoint == "chat"
        self.url = f"{settings.base_url.rstrip('/')}/{'chat/completions' if self.chat else 'completions'}"
        self.nonce = settings.nonce or uuid.uuid4().hex[:8]
        self.task_requests = 0

    def unique(self, prompt: str) -> str:
        """`prompt` behind a marker no other request of this bench carries (when settings.unique_prompts)."""
        if not self.settings.unique_prompts:
            return prompt
        self.task_requests += 1
        return f"<!-- specsweep request {self.nonce}-{self.task_requests} -->\n{prompt}"

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

    async def served_models(self, session: aiohttp.ClientSession) -> list[dict] | str:
        """GET /models' entries, or why they could not be read."""
        url = f"{self.settings.base_url.rstrip('/')}/models"
        try:
            async with session.get(url, headers=self.headers) as response:
                if response.status != 200:
                    return f"GET {url} answered HTTP {response.status}"
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            return f"GET {url} failed: {type(err).__name__}: {err}"
        data = body.get("data") if isinstance(body, dict) else None
        return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []

    async def identify(self, session: aiohttp.ClientSession) -> None:
        """The model to ask for (the first served one unless given) and its context length."""
        models = await self.served_models(session)
        if self.settings.model is None:
            if isinstance(models, str):
                raise BenchAbort(f"{models}; is {self.settings.base_url} an OpenAI-compatible server? "
                                 "Pass --model to skip the look-up")  # fmt: skip
            if not models or not isinstance(models[0].get("id"), str):
                raise BenchAbort(f"{self.settings.base_url}/models lists no model; pass --model")
            self.settings = self.settings.model_copy(update={"model": models[0]["id"]})
        # A server without /models (or without the field) skips the context-length check.
        self.max_model_len = None if isinstance(models, str) else max_model_len(models, self.settings.model)

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
        """`runs` batches of `concurrency` simultaneous requests, counters snapshotted around them all.

        expected_pp_tokens: the prompt size the bench planned (synthetic tests); compared with each
        request's usage.prompt_tokens. None for task prompts, whose size only the server knows.
        """
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
        ok = [r for r in everything if r.error is None]
        mismatch = None
        if expected_pp_tokens is None:
            # Task prompts are fixed text: the server's own count is the prompt size.
            expected_pp_tokens = next((r.prompt_tokens for r in ok if r.prompt_tokens), 0)
        else:
            mismatch = self.warn_mismatch(label, prompt_mismatch(ok, expected_pp_tokens))
        # Only good requests make figures: a failed one has no trustworthy timing (and add_batch skips it too).
        good_batches = [[r for r in batch if r.error is None] for batch in batches]
        metrics = run_metrics(good_batches, concurrency, expected_pp_tokens, self.latency_s)
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
            errors=RowErrors(failed=len(failed), total=len(everything), messages=error_messages(failed)),
            token_count_source=sorted({r.token_source for r in ok if r.token_source}),
            prompt_tokens_mismatch=mismatch,
            requests_without_usage=sum(1 for r in ok if not r.usage_reported),
        )
        return row, everything

    @staticmethod
    def warn_mismatch(label: str, mismatch: PromptMismatch | None) -> PromptMismatch | None:
        if mismatch is not None:
            print(
                f"[bench] WARNING {label}: the server counted {mismatch.server_tokens()} prompt tokens where the "
                f"bench planned {mismatch.client_tokens} "
                f"({mismatch.relative_diff:+.1%}); pp t/s uses the server's count. Is --tokenizer the served "
                "model's tokenizer?",
                file=sys.stderr,
                flush=True,
            )
        return mismatch

    async def synthetic(
        self, session: aiohttp.ClientSession, depth: int, pp: int, tg: int, concurrency: int
    ) -> tuple[BenchRow, list[RequestTiming]]:
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

        # What the server should count: the text cut to size plus the template tokens measured at warmup.
        planned = text_pp + (self.delta_user if depth == 0 else text_depth + self.delta_context)
        if self.settings.warmup:
            # One unmeasured batch of the same shape first, as llama-benchy does.
            await asyncio.gather(*(stream(session, self.url, body, self.headers, self.chat) for body in payloads()))
        return await self.measure(session, f"pp{pp} tg{tg} d{depth} c{concurrency}", payloads, concurrency,
                                  (depth, pp, tg), expected_pp_tokens=planned)  # fmt: skip

    async def task(
        self, session: aiohttp.ClientSession, name: str, prompt: str, max_tokens: int, concurrency: int
    ) -> tuple[BenchRow, list[RequestTiming]]:
        """A task workload: one real prompt in every request (each behind its own marker), generation capped at
        max_tokens."""
        return await self.measure(
            session, f"{name} c{concurrency}",
            lambda: [self.payload("", self.unique(prompt), max_tokens) for _ in range(concurrency)], concurrency,
            (0, 0, max_tokens),
        )  # fmt: skip

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Model name, latency and warmup, once per session, before any measured request."""
        await self.identify(session)
        await self.prepare(session)

    async def prepare(self, session: aiohttp.ClientSession) -> None:
        self.latency_s = await self.latency(session)
        if self.settings.warmup:
            await self.warmup(session)

    async def warmup(self, session: aiohttp.ClientSession) -> None:
        """First requests, unmeasured; they also tell how many tokens the server adds to a prompt."""
        text = "Warmup " * 10
        user = await stream(session, self.url, self.payload("", text, 1), self.headers, self.chat)
        if user.error:
            raise BenchAbort(f"warmup request failed: {user.error}; is {self.settings.base_url} serving "
                             f"{self.settings.model}? (--no-warmup skips this request)")  # fmt: skip
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
            await self.identify(session)
            # Before the warmup: a test that cannot fit would only produce a row of HTTP 400s.
            check_fits(self.max_model_len, self.settings.depth, self.settings.pp, self.settings.tg)
            await self.prepare(session)
            rows = [
                (await self.synthetic(session, depth, pp, tg, concurrency))[0]
                for depth in self.settings.depth
                for pp in self.settings.pp
                for tg in self.settings.tg
                for concurrency in self.settings.concurrency
            ]
        return self.report(rows)
