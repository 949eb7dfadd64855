"""Step time vs k: the cost model behind every prediction.

Model: one verify step of a batch costs T(k) = t0 + t1 * k seconds, where k is the number of drafted tokens per
sequence: t0 is the target model's decode step (plus the drafter's fixed cost), t1 the marginal cost of drafting
and verifying one more token. Measured per cell as T = L / tg_req: a request emits L tokens per step on average
(1 + mean accepted, the cell's own measured mean acceptance length) at tg_req tokens/s, so steps take L / tg_req;
the no-drafter cell is k = 0 with L = 1. Fitted by least squares per (quant, drafter, workload, concurrency);
its error is the RMS of the relative residuals, reported with the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StepCost:
    intercept_s: float
    per_token_s: float
    # (k, measured step time in s) the fit used.
    points: tuple[tuple[int, float], ...]

    def step_time(self, k: int) -> float:
        return self.intercept_s + self.per_token_s * k

    @property
    def rms_error_pct(self) -> float:
        residuals = [(self.step_time(k) - t) / t for k, t in self.points]
        return 100 * math.sqrt(sum(r * r for r in residuals) / len(residuals))


def measured_step_time(tokens_per_step: float, tg_req_tps: float) -> float:
    return tokens_per_step / tg_req_tps


def fit(points: list[tuple[int, float]]) -> StepCost:
    """Least-squares line through (k, step time); needs two distinct k."""
    ks = {k for k, _ in points}
    if len(ks) < 2:
        raise ValueError(f"the step-cost fit needs cells at two or more k (have k in {sorted(ks)}); measure k=1 and k_max")
    n = len(points)
    mean_k = sum(k for k, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    slope = sum((k - mean_k) * (t - mean_t) for k, t in points) / sum((k - mean_k) ** 2 for k, _ in points)
    return StepCost(intercept_s=mean_t - slope * mean_k, per_token_s=slope, points=tuple(sorted(points)))
