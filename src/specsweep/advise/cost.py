"""Step time vs drafted tokens: the cost model behind every prediction.

Model: a verify step that drafted d tokens for the sequence costs T(d) = t_plain + t_draft * d seconds (d >= 1),
and a step that drafted nothing costs t_plain: the step of a server without a drafter. t_draft is the cost of
proposing and verifying one more token. Steps that draft nothing are common with ngram (no n-gram match at that
position: about half of all verify steps on the embedded prompts, at every k) and vLLM's per-step lists leave them
out; they are counted from the request's tokens (specsweep.advise.acceptance.Trace.plain_steps).

What a cell measures, per workload and concurrency, is seconds per decoded token (1 / its per-request tg t/s) and,
from its traces, its mix of steps per token: p plain steps and s drafted steps at its k, so
seconds/token = (p + s) * t_plain + s * k * t_draft. The no-drafter cell is p = 1, s = 0. Without traces a cell
counts as drafting at every step (s = 1 / its mean acceptance length, p = 0). The parameters are fitted by least
squares over the measured cells (the no-drafter cell among them); its error is the RMS of the relative residuals.

A fixed cost per drafted step c (T(d) = t_plain + c + t_draft * d) is fitted too once three or more drafted k were
measured (fewer cannot tell it from t_plain and t_draft); else it is taken as 0. On the embedded ngram sweep
(benchmarks/k_advisor.py: k = 1..7 and no drafter, two workloads at concurrency 1 and 2, two runs) c came out between
-2.9 and +4.7 ms against plain steps of 54-60 ms, and t_plain fitted on the drafter cells alone was within 1-2 ms of
the no-drafter server's step: most of the "fixed cost of speculating" a line through drafted steps alone shows
(about 10 ms there) is the plain steps' time spread over the drafted ones. So a no-drafter cell and one drafted k
identify the model well enough to predict every k (within 7 % there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

# Distinct drafted k needed before the fixed cost per drafted step is fitted instead of taken as 0.
FIXED_COST_MIN_K = 3


@dataclass(frozen=True)
class StepMix:
    """One cell's measurement at one workload and concurrency, per decoded token."""

    k: int  # 0: no drafter
    plain_steps: float
    drafted_steps: float
    seconds: float

    @classmethod
    def no_drafter(cls, tg_req_tps: float) -> StepMix:
        return cls(k=0, plain_steps=1.0, drafted_steps=0.0, seconds=1.0 / tg_req_tps)

    @classmethod
    def without_traces(cls, k: int, mean_acceptance_length: float, tg_req_tps: float) -> StepMix:
        return cls(k=k, plain_steps=0.0, drafted_steps=1.0 / mean_acceptance_length, seconds=1.0 / tg_req_tps)


@dataclass(frozen=True)
class StepCost:
    plain_s: float
    per_token_s: float
    per_draft_step_s: float = 0.0
    # The measurements it was fitted on; whether the fixed cost per drafted step was fitted or taken as 0.
    mixes: tuple[StepMix, ...] = ()
    fixed_cost_fitted: bool = False

    def step_time(self, drafted: int) -> float:
        if drafted == 0:
            return self.plain_s
        return self.plain_s + self.per_draft_step_s + self.per_token_s * drafted

    def seconds_per_token(self, mix: StepMix) -> float:
        return mix.plain_steps * self.step_time(0) + mix.drafted_steps * self.step_time(mix.k)

    @property
    def rms_error_pct(self) -> float:
        if not self.mixes:
            return math.nan
        residuals = [self.seconds_per_token(m) / m.seconds - 1 for m in self.mixes]
        return 100 * math.sqrt(sum(r * r for r in residuals) / len(residuals))


def _design(mixes: list[StepMix], with_fixed: bool) -> np.ndarray:
    # Each row divided by the measured seconds: least squares on relative residuals, the error reported.
    return np.array([[(m.plain_steps + m.drafted_steps) / m.seconds, m.drafted_steps * m.k / m.seconds]
                     + ([m.drafted_steps / m.seconds] if with_fixed else []) for m in mixes])  # fmt: skip


def fit(mixes: list[StepMix]) -> StepCost:
    """The fixed cost per drafted step is fitted where FIXED_COST_MIN_K drafted k were measured and something tells
    it from t_plain (a no-drafter cell or plain steps); else it is 0."""
    drafted_k = {m.k for m in mixes if m.k > 0 and m.drafted_steps > 0}
    for with_fixed in (True, False) if len(drafted_k) >= FIXED_COST_MIN_K else (False,):
        design = _design(mixes, with_fixed)
        if drafted_k and np.linalg.matrix_rank(design) == design.shape[1]:
            # A step cannot get faster by drafting more: t_plain and t_draft are bounded at 0 (an unbounded fit of
            # noisy cells gave t_draft < 0, and policies replayed on it then preferred the longest drafts). The fixed
            # cost per drafted step stays free: measured between -2.9 and +4.7 ms (module doc).
            lower = [0.0, 0.0] + ([-np.inf] if with_fixed else [])
            solution = lsq_linear(design, np.ones(len(mixes)), bounds=(lower, np.inf)).x
            plain, per_token, *fixed = (float(x) for x in solution)
            return StepCost(plain, per_token, fixed[0] if fixed else 0.0, tuple(mixes), with_fixed)
    raise ValueError(f"the step-cost fit needs a no-drafter cell and a drafted k, or two drafted k (have k in "
                     f"{sorted({m.k for m in mixes})}); measure no drafter and k_max")  # fmt: skip
