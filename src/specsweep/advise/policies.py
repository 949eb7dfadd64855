"""Predicted generation speed of draft-length policies, from the acceptance process and the step cost.

All of them walk a request's positions (`Trace.runs`: R(p), the tokens in a row the drafter gets right from p):
a step at p that drafts k accepts min(k, R(p)), emits those plus the target's token, and costs T(k).
- fixed k: tokens per step (replayed on the runs, or 1 + sum_{i<=k} m_i from /metrics alone) / T(k).
- HF transformers' heuristic (AssistedCandidateGenerator: all drafted tokens accepted -> k += 2, else
  k = max(1, k - 1)), capped at the traced k_max.
- oracle: the best any policy could do knowing R(p) in advance, k in 0..min(R(p), k_max) at every step (drafting
  past R(p) only costs time). Maximising tokens / seconds is a ratio: Dinkelbach's method (for a ratio r, one
  dynamic programme over positions maximises tokens - r * seconds; r <- the best path's ratio; repeat) finds it
  for any step cost, including the no-drafter step that is cheaper than the line's k = 0. No policy on these runs,
  HF's or any fixed k, beats it.
- vLLM's batch-size schedule (`num_speculative_tokens_per_batch_size`): per concurrency, the best fixed k there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


def fixed_k_tps(tokens_per_step: float, cost: StepCost, k: int) -> float:
    return tokens_per_step / cost.step_time(k)


def best_fixed_k(tokens_per_step: Callable[[int], float], cost: StepCost, k_max: int) -> tuple[int, float]:
    """The k in 0..k_max with the highest predicted per-request t/s (k = 0: no drafter is best)."""
    options = [(0, 1.0 / cost.step_time(0))] + [(k, fixed_k_tps(tokens_per_step(k), cost, k)) for k in range(1, k_max + 1)]
    return max(options, key=lambda option: option[1])


def replay_hf(runs: list[int], cost: StepCost, k_max: int, k_start: int | None = None) -> PolicyResult:
    k = min(k_start or k_max, k_max)
    position = steps = 0
    tokens = seconds = k_sum = 0.0
    while position < len(runs):
        accepted = min(runs[position], k)
        tokens += accepted + 1
        seconds += cost.step_time(k)
        k_sum += k
        steps += 1
        position += accepted + 1
        k = min(k + 2, k_max) if accepted == k else max(1, k - 1)
    return PolicyResult("hf_heuristic", tokens, seconds, k_sum / steps)


def oracle(runs: list[int], cost: StepCost, k_max: int) -> PolicyResult:
    n = len(runs)
    ratio, result = 0.0, None
    for _ in range(100):
        # value[p]: the best tokens - ratio * seconds from position p on; choice[p]: its k.
        value = [0.0] * (n + 1)
        choice = [0] * n
        for position in range(n - 1, -1, -1):
            best = None
            for k in range(0, min(runs[position], k_max) + 1):
                gain = (k + 1) - ratio * cost.step_time(k) + value[min(position + k + 1, n)]
                if best is None or gain > best:
                    best, choice[position] = gain, k
            value[position] = best
        tokens = seconds = k_sum = 0.0
        position = steps = 0
        while position < n:
            k = choice[position]
            tokens, seconds, k_sum, steps = tokens + k + 1, seconds + cost.step_time(k), k_sum + k, steps + 1
            position += k + 1
        result = PolicyResult("oracle", tokens, seconds, k_sum / steps)
        if result.tg_req_tps <= ratio * (1 + 1e-12):
            break
        ratio = result.tg_req_tps
    return result


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
