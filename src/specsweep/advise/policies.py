"""Predicted generation speed of draft-length policies, from the acceptance process and the step cost.

All of them walk a request's positions (`Trace.runs`: R(p), the tokens in a row the drafter gets right from p):
a step at p that drafts k accepts min(k, R(p)), emits those plus the target's token, and costs T(k). The request's
plain steps (no draft proposed) cost T(0) each under every policy.
- fixed k: the replayed steps (or, from /metrics alone, 1 + sum_{i<=k} m_i tokens per step) at T(k).
- HF transformers' heuristic (AssistedCandidateGenerator: all drafted tokens accepted -> k += 2, else
  k = max(1, k - 1)), capped at the traced k_max.
- oracle: the best any policy could do knowing R(p) in advance, k in 0..min(R(p), k_max) at every step (drafting
  past R(p) only costs time). Maximising tokens / seconds is a ratio: Dinkelbach's method (for a ratio r, one
  dynamic programme over positions maximises tokens - r * seconds; r <- the best path's ratio; repeat) finds it
  for any step cost, a fixed cost per drafted step included. No policy on these runs, HF's or any fixed k, beats it.
- vLLM's batch-size schedule (`num_speculative_tokens_per_batch_size`): per concurrency, the best fixed k there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from specsweep.advise.acceptance import replay
from specsweep.advise.cost import StepCost


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    tokens: float
    seconds: float
    # Over the drafted steps.
    mean_k: float
    # Every verify step, plain ones included.
    steps: int = 0

    @property
    def tg_req_tps(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps


def fixed_k_tps(tokens_per_step: float, cost: StepCost, k: int) -> float:
    """From /metrics alone: every step drafts k and emits `tokens_per_step` on average."""
    return tokens_per_step / cost.step_time(k)


def fixed_k(runs: list[int], cost: StepCost, k: int, plain_steps: int = 0) -> PolicyResult:
    steps, accepted = replay(runs, k)
    tokens = plain_steps + steps + accepted
    return PolicyResult("fixed k", tokens, plain_steps * cost.step_time(0) + steps * cost.step_time(k), k, plain_steps + steps)


def best_fixed_k(predicted_tps: Callable[[int], float], k_max: int) -> tuple[int, float]:
    """The k in 0..k_max with the highest predicted per-request t/s (k = 0: no drafter is best)."""
    return max(((k, predicted_tps(k)) for k in range(0, k_max + 1)), key=lambda option: option[1])


def replay_hf(runs: list[int], cost: StepCost, k_max: int, k_start: int | None = None, plain_steps: int = 0) -> PolicyResult:
    k = min(k_start or k_max, k_max)
    position = steps = 0
    tokens, seconds, k_sum = float(plain_steps), plain_steps * cost.step_time(0), 0.0
    while position < len(runs):
        accepted = min(runs[position], k)
        tokens += accepted + 1
        seconds += cost.step_time(k)
        k_sum += k
        steps += 1
        position += accepted + 1
        k = min(k + 2, k_max) if accepted == k else max(1, k - 1)
    return PolicyResult("hf_heuristic", tokens, seconds, k_sum / steps, plain_steps + steps)


def oracle(runs: list[int], cost: StepCost, k_max: int, plain_steps: int = 0) -> PolicyResult:
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
        tokens, seconds, k_sum = float(plain_steps), plain_steps * cost.step_time(0), 0.0
        position = steps = 0
        while position < n:
            k = choice[position]
            tokens, seconds, k_sum, steps = tokens + k + 1, seconds + cost.step_time(k), k_sum + k, steps + 1
            position += k + 1
        result = PolicyResult("oracle", tokens, seconds, k_sum / steps, plain_steps + steps)
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
