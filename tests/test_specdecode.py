"""Acceptance from two /metrics snapshots (vLLM's counter names and labels)."""

from __future__ import annotations

import pytest

from specsweep.bench.specdecode import diff, parse


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


def test_per_request_stats_sum_and_give_positions_from_the_histogram() -> None:
    from specsweep.bench.specdecode import from_request_stats

    # vLLM's documented example: k=3, 43 steps, 10 of 129 drafts accepted.
    first = {"mean_acceptance_length": 1.2326, "draft_acceptance_rate": 0.0775, "acceptance_histogram": [39, 1, 0, 3],
             "num_spec_steps": 43, "num_accepted_draft_tokens": 10, "num_draft_tokens": 129, "num_spec_tokens": 3}  # fmt: skip
    second = {**first, "acceptance_histogram": [0, 0, 0, 10], "num_spec_steps": 10,
              "num_accepted_draft_tokens": 30, "num_draft_tokens": 30}  # fmt: skip
    one = from_request_stats([first])
    assert (one.drafts, one.draft_tokens, one.accepted) == (43, 129, 10)
    assert one.mean_acceptance_length == pytest.approx(1 + 10 / 43)
    # position 1 accepted in 4 steps (1 + 0 + 3), position 2 in 3, position 3 in 3
    assert one.per_position == pytest.approx([4 / 43, 3 / 43, 3 / 43])
    assert one.source == "per_request"
    both = from_request_stats([first, second])
    assert (both.drafts, both.accepted) == (53, 40)
    assert both.per_position == pytest.approx([14 / 53, 13 / 53, 13 / 53])
