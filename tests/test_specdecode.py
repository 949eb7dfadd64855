"""Acceptance from two /metrics snapshots (vLLM's counter names and labels)."""

from __future__ import annotations

import pytest

from specsweep.metrics.specdecode import diff, parse


def metrics(drafts: int, draft_tokens: int, accepted: int, per_pos: list[int]) -> str:
    labels = 'engine="0",model_name="m"'
    lines = [
        "# HELP vllm:spec_decode_num_drafts Number of spec decoding drafts.",
        "# TYPE vllm:spec_decode_num_drafts counter",
        f"vllm:spec_decode_num_drafts_total{{{labels}}} {drafts}.0",
        f"vllm:spec_decode_num_drafts_created{{{labels}}} 1.7e9",
        "# TYPE vllm:spec_decode_num_draft_tokens counter",
        f"vllm:spec_decode_num_draft_tokens_total{{{labels}}} {draft_tokens}.0",
        "# TYPE vllm:spec_decode_num_accepted_tokens counter",
        f"vllm:spec_decode_num_accepted_tokens_total{{{labels}}} {accepted}.0",
        "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter",
    ]
    for position, value in enumerate(per_pos):
        lines.append(f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{position}"}} {value}.0')
    lines.append("# TYPE vllm:num_requests_running gauge")
    lines.append(f"vllm:num_requests_running{{{labels}}} 0.0")
    return "\n".join(lines) + "\n"


def test_diff_gives_rate_length_and_positions() -> None:
    before = parse(metrics(10, 40, 20, [8, 6, 4, 2]))
    after = parse(metrics(30, 120, 80, [26, 22, 18, 14]))
    delta = diff(before, after)
    assert (delta.drafts, delta.draft_tokens, delta.accepted) == (20, 80, 60)
    assert delta.acceptance_rate == pytest.approx(0.75)
    assert delta.mean_acceptance_length == pytest.approx(4.0)
    assert delta.per_position == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_nothing_drafted_has_no_rates() -> None:
    same = parse(metrics(5, 20, 10, [5, 3, 1, 1]))
    delta = diff(same, same)
    assert delta.drafts == 0 and delta.acceptance_rate is None and delta.mean_acceptance_length is None


def test_server_without_speculation_gives_none() -> None:
    plain = parse('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 0.0\n')
    assert not plain.present
    assert diff(plain, plain) is None


def test_counters_going_backwards_mean_a_restart() -> None:
    with pytest.raises(ValueError, match="restarted"):
        diff(parse(metrics(9, 9, 9, [])), parse(metrics(1, 1, 1, [])))
