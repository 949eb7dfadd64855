"""Speculative-decoding counters from vLLM's Prometheus `/metrics`, and their difference around a workload.

The counters are cumulative since server start, so a workload's acceptance is the difference of two
snapshots taken right before and right after it (with no other traffic in between).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from specsweep.records.bench import SpecDelta

DRAFTS = "vllm:spec_decode_num_drafts_total"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"


@dataclass(frozen=True)
class SpecSnapshot:
    """Counter values summed over engines/models; `present` is False when the server does not speculate."""

    present: bool
    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    accepted_per_pos: dict[int, float] = field(default_factory=dict)


def parse(text: str) -> SpecSnapshot:
    totals = {DRAFTS: 0.0, DRAFT_TOKENS: 0.0, ACCEPTED: 0.0}
    per_pos: dict[int, float] = {}
    present = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
                present = True
            elif sample.name == ACCEPTED_PER_POS:
                position = int(sample.labels["position"])
                per_pos[position] = per_pos.get(position, 0.0) + sample.value
                present = True
    return SpecSnapshot(present, totals[DRAFTS], totals[DRAFT_TOKENS], totals[ACCEPTED], per_pos)


def from_request_stats(stats: list[dict]) -> SpecDelta:
    """Acceptance summed over vLLM's per-request `metrics.speculative_decoding` blocks.

    `acceptance_histogram[j]` counts steps that accepted exactly j drafts, so position i (0-based) was
    accepted in every step that accepted more than i.
    """
    drafts = sum(int(s["num_spec_steps"]) for s in stats)
    draft_tokens = sum(int(s["num_draft_tokens"]) for s in stats)
    accepted = sum(int(s["num_accepted_draft_tokens"]) for s in stats)
    histograms = [list(s.get("acceptance_histogram") or []) for s in stats]
    width = max(map(len, histograms), default=0)
    histogram = [sum(h[j] for h in histograms if j < len(h)) for j in range(width)]
    accepted_per_pos = [sum(histogram[i + 1 :]) for i in range(max(width - 1, 0))]
    return _delta(drafts, draft_tokens, accepted, accepted_per_pos, "per_request")


def diff(before: SpecSnapshot, after: SpecSnapshot) -> SpecDelta | None:
    """Acceptance between two snapshots; None for servers without speculative decoding."""
    if not (before.present or after.present):
        return None
    drafts = round(after.drafts - before.drafts)
    draft_tokens = round(after.draft_tokens - before.draft_tokens)
    accepted = round(after.accepted - before.accepted)
    if min(drafts, draft_tokens, accepted) < 0:
        raise ValueError("spec-decode counters went backwards: the server restarted between snapshots")
    positions = sorted(set(before.accepted_per_pos) | set(after.accepted_per_pos))
    accepted_per_pos = [after.accepted_per_pos.get(p, 0.0) - before.accepted_per_pos.get(p, 0.0) for p in positions]
    return _delta(drafts, draft_tokens, accepted, accepted_per_pos, "metrics")


def _delta(drafts: int, draft_tokens: int, accepted: int, accepted_per_pos: list[float], source: str) -> SpecDelta:
    """acceptance rate = accepted/drafted; mean length = 1 + accepted/drafts; position i = accepted_i/drafts."""
    return SpecDelta(
        drafts=drafts,
        draft_tokens=draft_tokens,
        accepted=accepted,
        acceptance_rate=accepted / draft_tokens if draft_tokens else None,
        mean_acceptance_length=1 + accepted / drafts if drafts else None,
        per_position=[count / drafts if drafts else 0.0 for count in accepted_per_pos],
        source=source,
    )
