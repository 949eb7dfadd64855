"""Predicted generation speed of draft-length policies, from the acceptance process and the step cost.

- fixed k: (1 + sum_{i<=k} m_i) / T(k) tokens/s per request.
- HF transformers' heuristic (AssistedCandidateGenerator: all drafted tokens accepted -> k += 2, else
  k = max(1, k - 1)), replayed on a measured k_max trace: step t drafts k_t and accepts min(A_t, k_t), where A_t is
  the run the measured step accepted at k_max. Approximation, stated: a step under k_t < A_t would have continued
  its run into the next step; the replay restarts from the next measured step instead.
- oracle: the best any policy could do on this trace knowing each step's run A_t in advance. Drafting past A_t
  only costs time, so k_t is in 0..A_t and all are accepted; maximising sum(k_t + 1) / sum(T(k_t)) with T linear
  (Dinkelbach: each step maximises (k + 1) - r * T(k), linear in k) puts every k_t at A_t or every k_t at 0. So the
  bound is the better of "draft exactly A_t" and "never draft"; no policy on this trace (HF's, any fixed k) beats it.
- vLLM's batch-size schedule (`num_speculative_tokens_per_batch_size`): per concurrency, the best fixed k there.
"""

from __future__ import annotations

from dataclasses import dataclass

from specsweep.advise.acceptance import Trace, expected_tokens_per_step
from specsweep.advise.cost import StepCost


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    tokens: float
    seconds: float
    mean_k: float

    @property
    def tg_req_tps(self) -> float:
        return self.tokens / self.seconds


def fixed_k_tps(marginal: list[float], cost: StepCost, k: int) -> float:
    return expected_tokens_per_step(marginal, k) / cost.step_time(k)


def best_fixed_k(marginal: list[float], cost: StepCost, k_max: int) -> tuple[int, float]:
    """The k in 0..k_max with the highest predicted per-request t/s (k = 0: no drafter is best)."""
    options = [(0, 1.0 / cost.step_time(0))] + [(k, fixed_k_tps(marginal, cost, k)) for k in range(1, k_max + 1)]
    return max(options, key=lambda option: option[1])


def replay_hf(trace: Trace, cost: StepCost, k_start: int | None = None) -> PolicyResult:
    k_max = trace.k_max
    k = min(k_start or k_max, k_max)
    tokens = seconds = k_sum = 0.0
    for run in trace.accepted:
        accepted = min(run, k)
        tokens += accepted + 1
        seconds += cost.step_time(k)
        k_sum += k
        k = min(k + 2, k_max) if accepted == k else max(1, k - 1)
    return PolicyResult("hf_heuristic", tokens, seconds, k_sum / len(trace.accepted))


def oracle(trace: Trace, cost: StepCost) -> PolicyResult:
    exact = PolicyResult("oracle", sum(run + 1 for run in trace.accepted),
                         sum(cost.step_time(run) for run in trace.accepted), sum(trace.accepted) / len(trace.accepted))  # fmt: skip
    plain = PolicyResult("oracle", len(trace.accepted), len(trace.accepted) * cost.step_time(0), 0.0)
    return max(exact, plain, key=lambda result: result.tg_req_tps)


def batch_size_schedule(best_k_by_concurrency: dict[int, int], max_num_seqs: int) -> list[list[int]]:
    """[[lo, hi, k], ...] covering batch sizes 1..max_num_seqs: each measured concurrency's best k holds from it up
    to the next measured one (below the smallest, the smallest's k)."""
    levels = sorted(best_k_by_concurrency)
    if not levels:
        raise ValueError("no concurrency level with a best k")
    schedule = []
    for index, level in enumerate(levels):
        lo = 1 if index == 0 else level
        hi = levels[index + 1] - 1 if index + 1 < len(levels) else max(max_num_seqs, level)
        schedule.append([lo, hi, best_k_by_concurrency[level]])
    # Neighbouring ranges with the same k are one range.
    merged: list[list[int]] = []
    for lo, hi, k in schedule:
        if merged and merged[-1][2] == k:
            merged[-1][1] = hi
        else:
            merged.append([lo, hi, k])
    return merged
