"""A bench row as llama-benchy's JSON has it, with specsweep's additions (acceptance, errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, computed_field


class Metric(BaseModel):
    mean: float
    std: float
    values: list[float]


class PromptMismatch(BaseModel):
    """The server counted other prompt sizes than the bench planned: the row is not the pp it is named."""

    client_tokens: int
    server_tokens_min: int
    server_tokens_max: int
    # (server - client) / client for the request furthest off.
    relative_diff: float
    # Requests off by more than the tolerance, of those whose usage block gave a prompt count.
    requests: int
    checked: int

    def server_tokens(self) -> str:
        low, high = self.server_tokens_min, self.server_tokens_max
        return str(low) if low == high else f"{low}-{high}"


class SpecDelta(BaseModel):
    """Acceptance over one workload. Rates are None when nothing was drafted (no division by zero)."""

    drafts: int
    draft_tokens: int
    accepted: int
    acceptance_rate: float | None
    mean_acceptance_length: float | None
    per_position: list[float]
    # "metrics": /metrics counter differences (include any concurrent traffic); "per_request": the
    # server's own per-request stats, exact to these requests.
    source: Literal["metrics", "per_request"] = "metrics"


class RowErrors(BaseModel):
    failed: int
    total: int
    # Distinct reasons, most frequent first, "(xN)" when N requests failed the same way.
    messages: list[str]

    @computed_field  # the requests the row's figures come from
    @property
    def used(self) -> int:
        return self.total - self.failed


class RunMetrics(BaseModel):
    """llama-benchy's figures of one test, over its runs."""

    pp_throughput: Metric | None
    pp_req_throughput: Metric | None
    tg_throughput: Metric | None
    tg_req_throughput: Metric | None
    peak_throughput: Metric | None
    peak_req_throughput: Metric | None
    ttfr: Metric | None
    est_ppt: Metric | None
    e2e_ttft: Metric | None


class RowShape(BaseModel):
    concurrency: int
    context_size: int
    prompt_size: int
    response_size: int
    is_context_prefill_phase: bool = False


class BenchRow(RunMetrics, RowShape):
    """One row of llama-benchy's JSON (the test's shape, then its figures, in llama-benchy's order) and specsweep's
    additions."""

    # specsweep's additions to llama-benchy's schema.
    acceptance: SpecDelta | None
    errors: RowErrors
    token_count_source: list[str]
    # Synthetic tests: the server's prompt counts differ from the planned pp (+ depth) by more than 1 %.
    prompt_tokens_mismatch: PromptMismatch | None = None
    # Good requests whose stream had no usage block: their prompt size is the bench's, unconfirmed.
    requests_without_usage: int = 0
