"""Adaptive k search: measure few cells, predict the rest, confirm the best by measuring it.

1. Measure k_max and the no-drafter cell (k = 0, a cell of the sweep anyway): the acceptance process of every
   k <= k_max comes from k_max's traces, and the two cells identify the step cost (the plain step, the cost per
   drafted token; specsweep.advise.cost). A sweep without a no-drafter cell measures k = 1 instead.
2. Predict every k; measure the predicted best unless it is k_max (each measurement is one more point of the fit).
3. Predict again. While the predicted best is not measured and its prediction beats the best measurement by more
   than TOLERANCE, measure it and predict again: the best is confirmed when the model's best is a measured cell.
4. While a neighbour of the best measured k is not measured and its prediction, widened by the prediction error
   seen at the best, could beat the best's measurement by more than TOLERANCE, measure it; move to a neighbour that
   beats it. (A neighbour that cannot beat it by more than TOLERANCE is not worth a server start.)
5. Stop: the best measured k is the answer.

The objective is the geometric mean of per-request tg t/s over the workload x concurrency rows (one k for the
whole cell, as a server is started with one k). A parallel drafter (DFlash) has no prediction across k: every k is
measured (brute force), as `sweep.strategy=adaptive` does for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from specsweep.advise.acceptance import Trace
from specsweep.advise.advice import advise

# How far below the true best the chosen k may be: the price of not measuring a cell.
TOLERANCE = 0.03
# Rounds of step 3 at most (each is a server start).
MAX_CONFIRM_ROUNDS = 3


def objective(rows: pd.DataFrame) -> float:
    values = rows["tg_req_tps_mean"].dropna()
    values = values[values > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if len(values) else math.nan


@dataclass
class AdaptiveResult:
    best_k: int
    measured: dict[int, float] = field(default_factory=dict)
    # The last prediction of every k, and each measured k's prediction made before it was measured.
    predicted: dict[int, float] = field(default_factory=dict)
    predicted_before_measuring: dict[int, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)


def predicted_objective(table: pd.DataFrame, k_max: int, traces: dict[tuple[str, str, int], list[Trace]] | None = None) -> dict[int, float]:
    groups = advise(table, "adaptive", traces=traces).groups
    out = {}
    for k in range(1, k_max + 1):
        values = [p.predicted_tg_req_tps for g in groups for p in g.predictions if p.k == k]
        out[k] = math.exp(sum(map(math.log, values)) / len(values)) if values and len(values) == len(groups) else math.nan
    return out


def search(measure: Callable[[list[int]], dict[int, pd.DataFrame]], k_max: int,
           predict: Callable[[pd.DataFrame], dict[int, float]] | None = None) -> AdaptiveResult:  # fmt: skip
    """`measure(ks)`: the table rows of the cells with these draft lengths (k = 0: no drafter), measuring those not
    measured yet; called once per round. `predict(table)`: predicted objective per k from the rows measured so far
    (default: from the table alone, without traces)."""
    predict = predict or (lambda table: predicted_objective(table, k_max))
    result = AdaptiveResult(best_k=0)
    frames: dict[int, pd.DataFrame] = {}
    # Asked for, measured or not (a sweep may lack some k): never asked again.
    tried: set[int] = set()

    def take(ks: list[int]) -> None:
        wanted = [k for k in dict.fromkeys(ks) if k not in tried]
        tried.update(wanted)
        if not wanted:
            return
        for k, rows in measure(wanted).items():
            frames[k] = rows
            result.measured[k] = objective(rows)
            result.order.append(k)
            if k in result.predicted:
                result.predicted_before_measuring[k] = result.predicted[k]

    def repredict() -> int:
        result.predicted = predict(pd.concat(frames.values(), ignore_index=True))
        return max((k for k in result.predicted if not math.isnan(result.predicted[k])),
                   key=lambda k: result.predicted[k], default=k_max)  # fmt: skip

    take(sorted({0, k_max}))
    if 0 not in frames:
        take([1])
    take([repredict()])
    for _ in range(MAX_CONFIRM_ROUNDS):
        predicted_best = repredict()
        best = max(result.measured, key=result.measured.get)
        if predicted_best in tried or result.predicted[predicted_best] <= result.measured[best] * (1 + TOLERANCE):
            break
        take([predicted_best])
    best = max(result.measured, key=result.measured.get)
    while True:
        predicted = result.predicted_before_measuring.get(best)
        error = abs(predicted / result.measured[best] - 1) if predicted and best > 0 else 0.0
        candidates = [n for n in (best - 1, best + 1) if 1 <= n <= k_max and n not in tried
                      and result.predicted.get(n, 0) * (1 + error) > result.measured[best] * (1 + TOLERANCE)]  # fmt: skip
        if not candidates:
            break
        take(candidates)
        best = max(result.measured, key=result.measured.get)
    result.best_k = best
    return result
