"""Typed records a cell writes (bench.json) and reads back for aggregation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from specsweep.bench.engine import BenchRow
from specsweep.bench.stats import RequestTiming


class RequestRecord(BaseModel):
    run: int
    ok: bool
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    token_source: str | None
    ttfr_s: float | None
    e2e_ttft_s: float | None
    token_ids: list[int]
    text: str

    @classmethod
    def from_timing(cls, run: int, timing: RequestTiming) -> "RequestRecord":
        return cls(
            run=run,
            ok=timing.error is None,
            error=timing.error,
            prompt_tokens=timing.prompt_tokens,
            completion_tokens=timing.total_tokens,
            token_source=timing.token_source,
            ttfr_s=None if timing.first_response_ts is None else timing.first_response_ts - timing.start_ts,
            e2e_ttft_s=None if timing.first_token_ts is None else timing.first_token_ts - timing.start_ts,
            token_ids=timing.token_ids,
            text=timing.text,
        )


class WorkloadRecord(BaseModel):
    workload: str
    concurrency: int
    prompt_file: str
    prompt_sha256: str
    max_tokens: int
    # llama-benchy's figures for this workload, with acceptance over exactly its requests.
    row: BenchRow
    requests: list[RequestRecord]


class CellRecord(BaseModel):
    sweep: str
    cell_id: str
    status: Literal["ok", "skipped"]
    skip_reason: str | None = None
    model: str
    quant: str
    drafter: str
    drafter_kind: str
    # None for drafter=none: k does not apply.
    k: int | None
    speculative_config: str | None
    server_startup_s: float | None = None
    # The kernel vLLM chose for quantized linear layers (from its log): says whether tok/s are int4-kernel figures.
    quant_kernel: str | None = None
    latency_ms: float | None = None
    workloads: list[WorkloadRecord] = []
