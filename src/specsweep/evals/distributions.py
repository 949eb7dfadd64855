"""Next-token distributions scored on held-out windows, and how two of them compare (PPL, top-k KLD, top-1).

One record format for both sources: the in-process job (full distributions, top-k kept) and a served endpoint
(vLLM's prompt logprobs: the top-k plus the actual token at every position). Every comparison, quant vs base and
served vs in-process alike, goes through `compare`, so no pair gets figures from a path of its own.

Top-k KLD: at each position the vocabulary is partitioned into the tokens whose probability both sides reported
(their top-k sets and the actual token, intersected) and one bucket for the rest, whose probability is 1 minus
the known ones on each side; KL(reference || candidate) is taken over that partition. By the data-processing
inequality it is a lower bound of the full-vocabulary KL (merging tokens can only lose divergence); the
in-process job reports the full KL next to it, so the gap is measured, not assumed.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

# A bucket probability never reaches 0 exactly in a float sum; this keeps log() finite without moving the KL.
_FLOOR = 1e-12

# Served vs in-process for the same checkpoint (same windows): measured on the embedded model served in float32,
# the top-k KLD is ~1e-8 and PPL differs by ~2e-5 relative; the nearest other checkpoint of the embedded sweep
# (W4A16 GPTQ vs its base) is at KLD 0.15 and PPL +13 %. Tolerances sit 4-5 orders above the noise and 2 below the
# nearest wrong checkpoint, so bf16 serving (noisier) still passes and a swapped checkpoint never does.
SAME_CHECKPOINT_MAX_KLD = 1e-3
SAME_CHECKPOINT_MAX_PPL_DELTA_PCT = 1.0


class Position(BaseModel):
    target: int
    target_logprob: float
    # The top-k (token id, logprob) pairs, most probable first.
    top: list[tuple[int, float]]


class ScoredWindows(BaseModel):
    """Logprobs of every predicted position of the held-out windows, from one model behind one source."""

    source: str  # "in_process" or "endpoint"
    windows_sha256: str
    top_k: int
    windows: list[list[Position]]

    @property
    def n_tokens(self) -> int:
        return sum(len(window) for window in self.windows)


class Comparison(BaseModel):
    n_tokens: int
    top_k: int
    ppl_reference: float
    ppl: float
    # 100 * ppl_reference / ppl: 100 means no loss.
    ppl_recovery_pct: float
    kld_topk: float
    top1_agreement: float


def perplexity(scored: ScoredWindows) -> float:
    return math.exp(-sum(p.target_logprob for w in scored.windows for p in w) / scored.n_tokens)


def position_kld(reference: Position, candidate: Position) -> float:
    """KL(reference || candidate) over the shared known tokens plus one rest bucket (see the module docstring)."""
    known_reference = {**dict(reference.top), reference.target: reference.target_logprob}
    known_candidate = {**dict(candidate.top), candidate.target: candidate.target_logprob}
    shared = known_reference.keys() & known_candidate.keys()
    kld = 0.0
    rest_reference = rest_candidate = 1.0
    for token in shared:
        p, q = math.exp(known_reference[token]), math.exp(known_candidate[token])
        rest_reference -= p
        rest_candidate -= q
        kld += p * (known_reference[token] - known_candidate[token])
    rest_reference, rest_candidate = max(rest_reference, _FLOOR), max(rest_candidate, _FLOOR)
    return kld + rest_reference * math.log(rest_reference / rest_candidate)


def compare(reference: ScoredWindows, candidate: ScoredWindows) -> Comparison:
    if reference.windows_sha256 != candidate.windows_sha256:
        raise ValueError(
            "the two sides scored different windows (their token ids differ: another tokenizer, text or window "
            "setting); compare only records of the same eval.endpoint_quality / quality settings"
        )
    top_k = min(reference.top_k, candidate.top_k)
    kld = 0.0
    agree = 0
    for window_ref, window_cand in zip(reference.windows, candidate.windows, strict=True):
        for ref, cand in zip(window_ref, window_cand, strict=True):
            if ref.target != cand.target:
                raise ValueError("the two sides disagree on the scored tokens although their windows match")
            ref_top = Position(target=ref.target, target_logprob=ref.target_logprob, top=ref.top[:top_k])
            cand_top = Position(target=cand.target, target_logprob=cand.target_logprob, top=cand.top[:top_k])
            kld += position_kld(ref_top, cand_top)
            agree += ref.top[0][0] == cand.top[0][0]
    n = reference.n_tokens
    ppl_reference, ppl = perplexity(reference), perplexity(candidate)
    return Comparison(
        n_tokens=n,
        top_k=top_k,
        ppl_reference=ppl_reference,
        ppl=ppl,
        ppl_recovery_pct=100 * (ppl_reference / ppl),
        kld_topk=kld / n,
        top1_agreement=agree / n,
    )


def same_checkpoint_problem(served_vs_in_process: Comparison) -> str | None:
    """Why the served model is not the checkpoint measured in-process, or None when they agree."""
    delta_pct = 100 * abs(served_vs_in_process.ppl / served_vs_in_process.ppl_reference - 1)
    if served_vs_in_process.kld_topk > SAME_CHECKPOINT_MAX_KLD:
        return (f"served outputs diverge from the in-process checkpoint: top-k KLD {served_vs_in_process.kld_topk:.4g} "
                f"> {SAME_CHECKPOINT_MAX_KLD:g}")  # fmt: skip
    if delta_pct > SAME_CHECKPOINT_MAX_PPL_DELTA_PCT:
        return f"served PPL differs from the in-process checkpoint's by {delta_pct:.2f} % (> {SAME_CHECKPOINT_MAX_PPL_DELTA_PCT:g} %)"
    return None
