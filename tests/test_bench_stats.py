"""llama-benchy's statistics on hand-computed examples."""

from __future__ import annotations

import math

import pytest

from specsweep.bench.stats import (
    RequestTiming,
    metric,
    peak_throughput,
    prompt_mismatch,
    prompt_tokens_used,
    run_metrics,
    tokens_after_first,
)


def test_std_is_population_std() -> None:
    m = metric([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert m.mean == 5.0
    assert m.std == 2.0  # sqrt(32 / 8), not sqrt(32 / 7)


def test_metric_multiplier_scales_values_mean_and_std() -> None:
    m = metric([0.1, 0.3], 1000)
    assert m.values == pytest.approx([100.0, 300.0])
    assert m.mean == pytest.approx(200.0) and m.std == pytest.approx(100.0)
    assert metric([]) is None


def test_peak_counts_the_densest_one_second_window() -> None:
    # 5 tokens in [0, 0.9], then 2 tokens at 2.0 and 2.5: best window holds 5.
    stamps = [0.0, 0.2, 0.4, 0.6, 0.9, 2.0, 2.5]
    assert peak_throughput(stamps) == 5.0


def test_peak_window_excludes_a_token_exactly_one_second_earlier() -> None:
    assert peak_throughput([0.0, 1.0, 1.5, 3.0]) == 2.0


def test_peak_of_a_burst_shorter_than_the_window_uses_its_duration() -> None:
    assert peak_throughput([0.0, 0.1, 0.2, 0.5]) == pytest.approx(4 / 0.5)
    assert peak_throughput([]) == 0.0


def test_tokens_after_first_skips_tokens_sharing_the_first_timestamp() -> None:
    assert tokens_after_first([1.0, 1.0, 1.5, 2.0]) == 2
    assert tokens_after_first([1.0]) == 0


def test_prompt_tokens_are_the_servers_count_whenever_it_sends_one() -> None:
    # Unlike llama-benchy's 20 % rule: the server processed its own count in est_ppt (the row warns instead).
    assert prompt_tokens_used(110, 100) == 110
    assert prompt_tokens_used(150, 100) == 150
    assert prompt_tokens_used(0, 100) == 100


def test_prompt_mismatch_beyond_one_percent_and_one_token() -> None:
    def ok(prompt: int) -> RequestTiming:
        return RequestTiming(start_ts=0.0, prompt_tokens=prompt)

    assert prompt_mismatch([ok(1010), ok(1009)], 1000) is None  # 1 % exactly is not more than 1 %
    assert prompt_mismatch([ok(33)], 32) is None  # one token off at pp32: a boundary, not a mismatch
    assert prompt_mismatch([ok(0)], 100) is None  # no usage: nothing to compare
    found = prompt_mismatch([ok(100), ok(150), ok(140), RequestTiming(start_ts=0, prompt_tokens=300, error="x")], 100)
    assert (found.server_tokens_min, found.server_tokens_max, found.requests, found.checked) == (140, 150, 2, 3)
    assert found.relative_diff == pytest.approx(0.5)


def test_unknown_prompt_size_gives_no_pp_figure() -> None:
    stamps = [0.5 + 0.1 * i for i in range(11)]
    metrics = run_metrics([[request(0.0, 0.5, stamps, prompt=0)]], 1, expected_pp_tokens=0, latency=0.0)
    assert metrics.pp_throughput is None and metrics.tg_throughput is not None


def request(start: float, ttfr: float, stamps: list[float], prompt: int = 100) -> RequestTiming:
    return RequestTiming(
        start_ts=start,
        end_ts=stamps[-1] + 0.01,
        first_response_ts=start + ttfr,
        first_token_ts=stamps[0],
        prompt_tokens=prompt,
        total_tokens=len(stamps),
        token_timestamps=stamps,
    )


def test_single_request_pp_tg_est_ppt_and_ttfr() -> None:
    # Request at t=0, first chunk at 0.5 s, 11 tokens 0.1 s apart from 0.5 s to 1.5 s; latency 0.1 s.
    stamps = [0.5 + 0.1 * i for i in range(11)]
    metrics = run_metrics([[request(0.0, 0.5, stamps)]], concurrency=1, expected_pp_tokens=100, latency=0.1)
    assert metrics.est_ppt.mean == pytest.approx(400.0)  # ms
    assert metrics.pp_throughput.mean == pytest.approx(100 / 0.4)
    assert metrics.tg_throughput.mean == pytest.approx(10 / 1.0)
    assert metrics.ttfr.mean == pytest.approx(500.0)
    assert metrics.e2e_ttft.mean == pytest.approx(500.0)
    assert metrics.pp_req_throughput == metrics.pp_throughput


def test_runs_give_mean_and_population_std() -> None:
    fast = [0.5 + 0.05 * i for i in range(11)]  # 20 t/s
    slow = [0.5 + 0.1 * i for i in range(11)]  # 10 t/s
    metrics = run_metrics([[request(0, 0.5, fast)], [request(0, 0.5, slow)]], 1, 100, 0.0)
    assert metrics.tg_throughput.values == pytest.approx([20.0, 10.0])
    assert metrics.tg_throughput.mean == pytest.approx(15.0)
    assert metrics.tg_throughput.std == pytest.approx(5.0)


def test_concurrency_totals_span_the_whole_batch() -> None:
    # Two requests started at 0.0 and 0.1; first tokens at 1.0 and 1.2; 5 tokens each, 0.25 s apart.
    a = request(0.0, 1.0, [1.0, 1.25, 1.5, 1.75, 2.0])
    b = request(0.1, 1.1, [1.2, 1.45, 1.7, 1.95, 2.2])
    metrics = run_metrics([[a, b]], concurrency=2, expected_pp_tokens=100, latency=0.0)
    # pp total: 200 prompt tokens / (max first token 1.2 - min start 0.0)
    assert metrics.pp_throughput.mean == pytest.approx(200 / 1.2)
    # tg total: 8 decoded tokens / (max last 2.2 - min first 1.0)
    assert metrics.tg_throughput.mean == pytest.approx(8 / 1.2)
    # per request: 4 / 1.0 each
    assert metrics.tg_req_throughput.values == pytest.approx([4.0, 4.0])
    assert metrics.pp_req_throughput.values == pytest.approx([100 / 1.0, 100 / 1.1])


def test_failed_requests_are_left_out_of_every_figure() -> None:
    ok = request(0.0, 0.5, [0.5 + 0.1 * i for i in range(11)])
    failed = RequestTiming(start_ts=0.0, error="HTTP 500")
    metrics = run_metrics([[ok, failed]], 2, 100, 0.0)
    assert len(metrics.tg_req_throughput.values) == 1
    assert not math.isnan(metrics.tg_throughput.mean)


def test_a_request_that_failed_mid_stream_adds_no_timing() -> None:
    # A stream cut after its first tokens has a ttfr and token times: none may reach the figures or batch windows.
    ok = request(0.0, 0.5, [0.5 + 0.1 * i for i in range(11)])
    cut = request(0.0, 0.2, [0.2, 0.3, 3.0])
    cut.error = "stream ended before [DONE]"
    for concurrency in (1, 2):
        assert run_metrics([[ok, cut]], concurrency, 100, 0.0) == run_metrics([[ok]], concurrency, 100, 0.0)
