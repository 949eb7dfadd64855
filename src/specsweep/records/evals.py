"""What a cell's evals record: greedy outputs, prompt logprobs, lm-eval scores."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class GreedyOutput(BaseModel):
    id: str
    token_ids: list[int]
    # Each token decoded alone: the text at any position, without the tokenizer at report time.
    pieces: list[str]
    finish_reason: str | None


class GreedyRecord(BaseModel):
    prompts: str
    prompts_sha256: str
    max_tokens: int
    concurrency: int = 1
    outputs: list[GreedyOutput]


class EndpointRecord(BaseModel):
    """What a cell's endpoint scored; the per-position logprobs are in the cell dir's SCORED_FILE."""

    scored: str
    windows_sha256: str
    n_windows: int
    window: int
    top_k: int
    n_tokens: int
    wall_s: float


class LmEvalScore(BaseModel):
    task: str
    # lm-eval's name: metric and filter, e.g. "acc,none", "exact_match,strict-match".
    metric: str
    value: float
    stderr: float | None
    n_samples: int | None


class LmEvalRecord(BaseModel):
    status: Literal["ok", "failed"]
    error: str | None = None
    model: str
    tasks: list[str]
    num_fewshot: int | None
    limit: int | None
    # How it was run (None in records made before they were settings): requests in flight, token budget per
    # question, and the whole run's limit in seconds.
    num_concurrent: int | None = None
    max_gen_toks: int | None = None
    timeout_s: float | None = None
    lm_eval_version: str | None
    # Every metric lm-eval reported; the first of each task is its headline figure.
    scores: list[LmEvalScore] = []
    wall_s: float

    def headline(self) -> dict[str, LmEvalScore]:
        found: dict[str, LmEvalScore] = {}
        for score in self.scores:
            found.setdefault(score.task, score)
        return found


class CellEvals(BaseModel):
    greedy: GreedyRecord | None = None
    endpoint_quality: EndpointRecord | None = None
    lm_eval: LmEvalRecord | None = None
    # Seconds each eval added to the cell's server lifetime.
    wall_s: dict[str, float] = {}
    # One line per eval that broke; the cell's throughput figures stand, the sweep's status step fails on these.
    errors: list[str] = []
