"""The acceptance process of a drafter, from what vLLM reports.

Two sources: `/metrics` per-position counts give the **marginal** acceptance m_i = P(the i-th draft token of a
step is accepted) = accepted at position i / drafts; `--per-request-spec-decode-metrics detailed` gives, per verify
step, how many tokens were drafted and accepted (the **trace**). Acceptance is prefix-closed (position i is accepted
only if 1..i-1 were), so the conditional c_i = P(i accepted | i-1 accepted) = m_i / m_{i-1}, and a step that drafts
k tokens accepts A_k = min(A, k) of them, where A is the step's run of acceptances at k_max.

For a chain drafter (ngram, MTP, EAGLE, a draft model) the token proposed at position i does not depend on k, so
one measurement at k_max gives every k <= k_max: E[tokens per step | k] = 1 + sum_{i<=k} m_i (the 1 is the token
the target model adds at every verify step). That formula assumes a step at k starts at positions like those a
step at k_max starts at; it does not: a k_max step swallows a long run whole, a smaller k lands inside it and gets
the rest of it next step. With a trace, `Trace.runs` + `replay` keep the positions (on the embedded ngram sweep the
marginal formula matched the measured steps at no k < k_max, the replay exactly at half of them). Steps that
drafted nothing (ngram without a match) are not in vLLM's lists; a trace counts them (`Trace.plain_steps`) and every
policy pays them as plain steps: whether a position has a match does not depend on k. A parallel drafter (DFlash)
proposes its block jointly: it must be measured at each k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def conditional_from_marginal(marginal: list[float]) -> list[float]:
    """c_i = m_i / m_{i-1} (m_0 = 1); NaN where position i-1 was never accepted."""
    previous = 1.0
    conditional = []
    for rate in marginal:
        conditional.append(rate / previous if previous > 0 else math.nan)
        previous = rate
    return conditional


def marginal_from_conditional(conditional: list[float]) -> list[float]:
    marginal, running = [], 1.0
    for rate in conditional:
        running *= rate
        marginal.append(running)
    return marginal


def expected_tokens_per_step(marginal: list[float], k: int) -> float:
    """1 + sum of the first k marginals: the mean tokens a verify step emits when k tokens are drafted."""
    if k > len(marginal):
        raise ValueError(f"k={k} is beyond the measured positions ({len(marginal)}): measure at a larger k")
    return 1.0 + sum(marginal[:k])


@dataclass(frozen=True)
class Trace:
    """Per verify step: tokens drafted and accepted (vLLM's per_step_drafted / per_step_accepted), and the verify
    steps that drafted nothing, which those lists leave out (`from_request`)."""

    drafted: tuple[int, ...]
    accepted: tuple[int, ...]
    plain_steps: int = 0

    @classmethod
    def from_request(cls, drafted: list[int], accepted: list[int], completion_tokens: int) -> Trace:
        """The first token comes from the prefill; every later step emits its accepted tokens + 1, a step that
        drafted nothing 1 token: the tokens the listed steps do not account for are plain steps."""
        listed = sum(a + 1 for a in accepted)
        return cls(drafted=tuple(drafted), accepted=tuple(accepted), plain_steps=max(0, completion_tokens - 1 - listed))

    @property
    def decoded_tokens(self) -> int:
        return self.plain_steps + sum(a + 1 for a in self.accepted)

    def __post_init__(self) -> None:
        if len(self.drafted) != len(self.accepted):
            raise ValueError("per_step_drafted and per_step_accepted differ in length")
        if any(a > d or a < 0 for a, d in zip(self.accepted, self.drafted)):
            raise ValueError("a step accepted more tokens than it drafted")

    @property
    def k_max(self) -> int:
        return max(self.drafted, default=0)

    def marginal(self) -> list[float]:
        """m_i over the steps that drafted at least i tokens."""
        out = []
        for position in range(1, self.k_max + 1):
            eligible = [a for a, d in zip(self.accepted, self.drafted) if d >= position]
            out.append(sum(a >= position for a in eligible) / len(eligible) if eligible else math.nan)
        return out

    def runs(self) -> list[int]:
        """R(p) for every position p this request generated: how many tokens in a row the drafter would get right if
        a step started at p with unlimited k. A step at p that drafted d and accepted a < d shows R(p + i) = a - i
        for i = 0..a (the same proposal, shifted: its (a+1)-th token was wrong); a step that accepted all d tokens is
        censored and continues into the next step's run when that one accepted anything (the bonus token then
        extended the drafter's guess). The list covers every position a drafted step emitted (the plain steps'
        tokens are apart); `replay` walks it with any fixed k <= the traced k."""
        spans: list[int] = [0] * len(self.accepted)
        following = 0
        for step in range(len(self.accepted) - 1, -1, -1):
            accepted, drafted = self.accepted[step], self.drafted[step]
            spans[step] = accepted if accepted < drafted else accepted + (1 + following if following > 0 else 0)
            following = spans[step]
        return [span - i for span, accepted in zip(spans, self.accepted) for i in range(accepted + 1)]

    def length_distribution(self) -> list[float]:
        """P(A = j), j = 0..k_max, over steps that drafted k_max tokens (a shorter draft censors A)."""
        full = [a for a, d in zip(self.accepted, self.drafted) if d == self.k_max]
        if not full:
            return []
        return [sum(a == j for a in full) / len(full) for j in range(self.k_max + 1)]


def replay(runs: list[int], k: int) -> tuple[int, int]:
    """(verify steps, accepted tokens) of a fixed-k server on the positions `runs` describes (Trace.runs): a step at
    p accepts min(k, R(p)) and the next starts after them and the bonus token. Unlike 1 + sum(m_i), this keeps
    where steps land: at a smaller k they start inside runs a k_max step would have swallowed whole."""
    position = steps = accepted = 0
    while position < len(runs):
        taken = min(k, runs[position])
        steps += 1
        accepted += taken
        position += taken + 1
    return steps, accepted
