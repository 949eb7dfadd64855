"""Step time vs k: the cost model behind every prediction.

Model: with a drafter on, one verify step of a batch costs T(k) = t0 + t1 * k seconds, where k is the number of
drafted tokens per sequence: t0 is the target model's decode step plus the fixed cost of speculating at all
(proposing, the rejection sampler, bookkeeping), t1 the marginal cost of drafting and verifying one more token.
A server without a drafter pays no fixed speculation cost, so its step time T_none is its own measured point, not
k = 0 on the line (on the embedded ngram sweep the line through k = 1..7 met k = 0 about 10 ms above the
no-drafter step). With only one drafted k measured, the no-drafter point anchors the line instead (less accurate
at small k; `adaptive` measures a second k before trusting it).

Measured per cell as T = L / tg_req: a request emits L tokens per step on average (1 + mean accepted, the cell's own
measured mean acceptance length) at tg_req tokens/s, so steps take L / tg_req; the no-drafter cell has L = 1.
Fitted by least squares per (quant, drafter, workload, concurrency); its error is the RMS of the relative
residuals, reported with the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StepCost:
    intercept_s: float
    per_token_s: float
    # (k, measured step time in s) the line went through.
    points: tuple[tuple[int, float], ...]
    # The no-drafter server's step, when measured apart from the line.
    no_draft_s: float | None = None

    def step_time(self, k: int) -> float:
        if k == 0 and self.no_draft_s is not None:
            return self.no_draft_s
        return self.intercept_s + self.per_token_s * k

    @property
    def rms_error_pct(self) -> float:
        residuals = [(self.intercept_s + self.per_token_s * k - t) / t for k, t in self.points]
        return 100 * math.sqrt(sum(r * r for r in residuals) / len(residuals))


def measured_step_time(tokens_per_step: float, tg_req_tps: float) -> float:
    return tokens_per_step / tg_req_tps


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    n = len(points)
    mean_k = sum(k for k, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    slope = sum((k - mean_k) * (t - mean_t) for k, t in points) / sum((k - mean_k) ** 2 for k, _ in points)
    return mean_t - slope * mean_k, slope


def fit(points: list[tuple[int, float]]) -> StepCost:
    """Least-squares line through the drafted points (k >= 1) when they have two distinct k, the no-drafter step
    (k = 0) kept apart; else the line through every point."""
    drafted = [(k, t) for k, t in points if k > 0]
    plain = [t for k, t in points if k == 0]
    if len({k for k, _ in drafted}) >= 2:
        intercept, slope = _line(drafted)
        no_draft = sum(plain) / len(plain) if plain else None
        return StepCost(intercept, slope, tuple(sorted(drafted)), no_draft)
    if len({k for k, _ in points}) < 2:
        raise ValueError(f"the step-cost fit needs cells at two or more k (have k in {sorted({k for k, _ in points})}); "
                         "measure k=1 and k_max")  # fmt: skip
    intercept, slope = _line(points)
    return StepCost(intercept, slope, tuple(sorted(points)))
