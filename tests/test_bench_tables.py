"""The bench report in llama-benchy's md, csv and json shapes, with specsweep's extra fields."""

from __future__ import annotations

import csv
import io
import json

from specsweep.bench.formats import CSV_HEADERS, markdown, to_csv, to_json
from specsweep.bench.runner import BenchReport
from specsweep.records.bench import BenchRow, Metric, RowErrors, SpecDelta


def m(mean: float, std: float = 0.5) -> Metric:
    return Metric(mean=mean, std=std, values=[mean - std, mean + std])


def report(concurrency: int, depth: int = 0) -> BenchReport:
    row = BenchRow(
        concurrency=concurrency, context_size=depth, prompt_size=512, response_size=128,
        pp_throughput=m(1000), pp_req_throughput=m(900), tg_throughput=m(25), tg_req_throughput=m(20),
        peak_throughput=m(30), peak_req_throughput=m(28), ttfr=m(500), est_ppt=m(490), e2e_ttft=m(510),
        acceptance=SpecDelta(drafts=10, draft_tokens=40, accepted=30, acceptance_rate=0.75,
                             mean_acceptance_length=4.0, per_position=[0.9, 0.8, 0.7, 0.6]),
        errors=RowErrors(failed=1, total=3, messages=["HTTP 500: boom"]), token_count_source=["token_ids"],
    )  # fmt: skip
    return BenchReport(
        version="0.4.0", timestamp="2026-11-29 00:00:00", latency_mode="api", latency_ms=1.5, model="m",
        prefix_caching_enabled=False, max_concurrency=concurrency, benchmarks=[row],
    )  # fmt: skip


def test_markdown_single_stream_has_llama_benchy_columns() -> None:
    lines = markdown(report(1, depth=4096)).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:7] == ["model", "test", "t/s", "peak t/s", "ttfr (ms)", "est_ppt (ms)", "e2e_ttft (ms)"]
    assert header[7:] == ["accept", "accept len", "errors"]
    assert "pp512 @ d4096" in lines[2] and "1000.00 ± 0.50" in lines[2]
    assert "tg128 @ d4096" in lines[3] and "0.750" in lines[3] and "1/3" in lines[3]


def test_markdown_concurrent_adds_total_and_per_request_columns() -> None:
    lines = markdown(report(4)).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:9] == [
        "model", "test", "t/s (total)", "t/s (req)", "peak t/s", "peak t/s (req)",
        "ttfr (ms)", "est_ppt (ms)", "e2e_ttft (ms)",
    ]  # fmt: skip
    assert "pp512 (c4)" in lines[2] and "tg128 (c4)" in lines[3]


def test_csv_has_llama_benchy_headers_first() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(report(1)))))
    assert list(rows[0].keys())[: len(CSV_HEADERS)] == CSV_HEADERS
    assert rows[1]["test_name"] == "tg128" and float(rows[1]["t_s_mean"]) == 25
    assert float(rows[1]["acceptance_rate"]) == 0.75


def test_json_follows_llama_benchy_schema_plus_extras() -> None:
    data = json.loads(to_json(report(1)))
    for key in ("version", "timestamp", "latency_mode", "latency_ms", "model", "prefix_caching_enabled",
                "max_concurrency", "benchmarks"):  # fmt: skip
        assert key in data
    bench = data["benchmarks"][0]
    for key in ("concurrency", "context_size", "prompt_size", "response_size", "pp_throughput",
                "pp_req_throughput", "tg_throughput", "tg_req_throughput", "peak_throughput",
                "peak_req_throughput", "ttfr", "est_ppt", "e2e_ttft"):  # fmt: skip
        assert key in bench
    assert set(bench["tg_throughput"]) == {"mean", "std", "values"}
    assert bench["acceptance"]["acceptance_rate"] == 0.75
    assert bench["errors"] == {"failed": 1, "total": 3, "used": 2, "messages": ["HTTP 500: boom"]}
    assert bench["prompt_tokens_mismatch"] is None and bench["requests_without_usage"] == 0
    assert bench["token_count_source"] == ["token_ids"]


def test_errors_and_prompt_warning_show_in_cells_and_notes_below_the_table() -> None:
    from specsweep.bench.stats import PromptMismatch

    data = report(1)
    data.benchmarks[0].prompt_tokens_mismatch = PromptMismatch(
        client_tokens=512, server_tokens_min=770, server_tokens_max=816, relative_diff=0.59375, requests=3, checked=3
    )
    table, notes = markdown(data).split("\n\n")
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[-2:] == ["errors", "warnings"]
    assert "1/3 failed" in lines[2] and "prompt +59.4%" in lines[2]  # pp row
    assert "1/3 failed" in lines[3] and "prompt" not in lines[3]  # tg row: its figures do not use prompt tokens
    assert notes.splitlines() == [
        "- pp512 tg128: 1 of 3 requests failed, figures use the 2 good ones: HTTP 500: boom",
        "- pp512 tg128: the server counted 770-816 prompt tokens where the bench planned 512 (+59.4%, 3 of 3 "
        "requests); pp t/s uses the server's count. Pass the served model's tokenizer as --tokenizer.",
    ]
    rows = list(csv.DictReader(io.StringIO(to_csv(data))))
    assert float(rows[0]["prompt_tokens_rel_diff"]) == 0.59375 and rows[1]["prompt_tokens_rel_diff"] == ""
