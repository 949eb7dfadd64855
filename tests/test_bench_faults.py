"""The bench against a scripted server playing faults a real vLLM cannot be made to send on demand.

Each fault must end as one failed request on its row, with a short reason, while the row's figures come
from the good requests alone. Also: prompt-size mismatch warnings and the context-length check.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from specsweep.bench.formats import markdown
from specsweep.bench.inputs import BenchAbort
from specsweep.bench.runner import Bench, BenchReport, BenchSettings
from specsweep.bench.stats import RequestTiming, run_metrics
from specsweep.records.bench import BenchRow

METRICS = ["pp_throughput", "pp_req_throughput", "tg_throughput", "tg_req_throughput", "peak_throughput",
           "peak_req_throughput", "ttfr", "est_ppt", "e2e_ttft"]  # fmt: skip


class Scripted:
    """A local OpenAI-style completions server; each POST plays the next entry of `faults`, then "ok".

    Responses are HTTP/1.1 with `Connection: close`, chunked like vLLM's, except "cut", whose body is
    delimited by the connection closing (so its early close is a clean EOF, not a transfer error), and
    "cut_midline", which also stops inside an event.
    Prompt tokens are counted one per word, times `prompt_factor`.
    """

    def __init__(self, faults: list[str] = (), prompt_factor: float = 1.0, max_model_len: int | None = None) -> None:
        self.faults = list(faults)
        self.prompt_factor = prompt_factor
        self.max_model_len = max_model_len
        self.posts = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends a "hang" once the test is done
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def next_fault(self) -> str:
        with self.lock:
            self.posts += 1
            return self.faults.pop(0) if self.faults else "ok"

    def __enter__(self) -> "Scripted":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    self.reply(404, b"{}")
                    return
                card = {"id": "scripted", "object": "model"}
                if script.max_model_len is not None:
                    card["max_model_len"] = script.max_model_len
                self.reply(200, json.dumps({"object": "list", "data": [card]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fault = script.next_fault()
                if fault == "http500":
                    self.reply(500, b'{"error": {"message": "boom", "type": "InternalServerError", "code": 500}}')
                    return
                try:
                    self.sse(fault, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout case)

            def sse(self, fault: str, body: dict) -> None:
                chunked = fault not in ("cut", "cut_midline")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()

                def write(raw: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw) if chunked else raw)
                    self.wfile.flush()

                def event(data: dict) -> None:
                    write(f"data: {json.dumps(data)}\n\n".encode())

                if fault != "empty":
                    time.sleep(0.03)  # prefill
                    ids = list(range(100, 100 + body["max_tokens"]))
                    for index, start in enumerate(range(0, len(ids), 2)):
                        part = ids[start : start + 2]
                        event({"choices": [{"index": 0, "text": " ".join(f"t{i}" for i in part), "token_ids": part}]})
                        time.sleep(0.005)
                        if index == 0 and fault == "malformed":
                            write(b"data: {not json\n\n")
                        if index == 0 and fault == "stream_error":
                            # What vLLM sends when generation fails after the 200 went out.
                            event({"error": {"message": "Internal server error", "type": "InternalServerError",
                                             "code": 500}})  # fmt: skip
                        if index == 0 and fault == "hang":
                            script.release.wait(30)
                            return
                        if index == 1 and fault in ("cut", "cut_chunked"):
                            return  # connection closes: no [DONE], and no final chunk when chunked
                        if index == 1 and fault == "cut_midline":
                            write(b'data: {"choices": [{"index": 0, "te')
                            return
                    if fault != "no_usage":
                        prompt = round(len(body["prompt"].split()) * script.prompt_factor)
                        usage = {"prompt_tokens": prompt, "completion_tokens": len(ids)}
                        event({"choices": [], "usage": {**usage, "total_tokens": prompt + len(ids)}})
                write(b"data: [DONE]\n\n")
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")

        return Handler


class Words:
    """A stand-in PromptSource whose tokens are words, the scripted server's unit."""

    def encode(self, text: str) -> list[str]:
        return text.split()

    def generate(self, prompt_tokens: int, context_tokens: int = 0, unique: bool = True) -> tuple[str, str]:
        # Completions send context + prompt as one string: the trailing space keeps the word count.
        return "ctx " * context_tokens, " ".join(["word"] * prompt_tokens)


def settings(server: Scripted, **overrides) -> BenchSettings:
    base = dict(base_url=server.url, pp=[16], tg=[8], runs=3, concurrency=[1], latency_mode="none", warmup=False,
                endpoint="completions", request_timeout_s=30)  # fmt: skip
    return BenchSettings(**{**base, **overrides})


def measure(server: Scripted, pp: int = 16, concurrency: int = 1, **overrides) -> tuple[BenchRow, list[RequestTiming]]:
    """One synthetic test (depth 0, tg 8) as `Bench.run` makes it."""

    async def go():
        bench = Bench(settings(server, pp=[pp], concurrency=[concurrency], **overrides), Words())
        async with bench.session() as session:
            await bench.start(session)
            return await bench.synthetic(session, 0, pp, 8, concurrency)

    return asyncio.run(go())


def figures(row: BenchRow) -> dict:
    return row.model_dump(include=set(METRICS))


def table(row: BenchRow) -> str:
    report = BenchReport(version="0.4.0", timestamp="t", latency_mode="none", latency_ms=0.0, model="scripted",
                         prefix_caching_enabled=False, max_concurrency=row.concurrency, benchmarks=[row])  # fmt: skip
    return markdown(report)


FAULTS = [
    ("http500", "HTTP 500: "),
    ("malformed", "malformed SSE: "),
    ("stream_error", "server error in stream: Internal server error"),
    ("empty", "empty completion"),
    ("cut", "stream ended before [DONE]"),
    ("cut_chunked", "stream ended before [DONE]"),
    ("cut_midline", "stream ended before [DONE]"),
    ("hang", "timeout after 2 s"),
]
# Only the hang tests wait out the timeout; the others keep a long one so a loaded machine cannot fail them.
HANG_TIMEOUT_S = 2


@pytest.mark.parametrize("fault,reason", FAULTS, ids=[fault for fault, _ in FAULTS])
def test_a_fault_is_one_failed_request_and_the_figures_come_from_the_good_ones(fault: str, reason: str) -> None:
    with Scripted(["ok", fault, "ok"]) as server:
        row, requests = measure(server, request_timeout_s=HANG_TIMEOUT_S if fault == "hang" else 30)
    bad = requests[1]
    # For the hang, the reason names the 2 s request timeout: that one ended it, not the server's 30 s (no clock).
    assert bad.error.startswith(reason), bad.error
    assert (row.errors.failed, row.errors.total, row.errors.used) == (1, 3, 2)
    assert row.errors.messages == [bad.error]
    good = [requests[0], requests[2]]
    assert all(r.error is None for r in good)
    # The row's figures are exactly those of the two good requests, each run its own batch.
    assert figures(row) == run_metrics([[r] for r in good], 1, 16, 0.0).model_dump()
    assert len(row.tg_throughput.values) == 2 and len(row.ttfr.values) == 2
    assert row.ttfr.values == pytest.approx([(r.first_response_ts - r.start_ts) * 1000 for r in good])
    assert row.token_count_source == ["token_ids"]
    text = table(row)
    assert "1/3 failed" in text and f"1 of 3 requests failed, figures use the 2 good ones: {reason}" in text


@pytest.mark.parametrize("fault", ["http500", "cut", "hang"])
def test_a_fault_inside_a_concurrent_batch_leaves_the_batch_totals_to_the_good_requests(fault: str) -> None:
    with Scripted([fault]) as server:
        timeout = HANG_TIMEOUT_S if fault == "hang" else 30
        row, requests = measure(server, concurrency=3, runs=1, request_timeout_s=timeout)
    good = [r for r in requests if r.error is None]
    assert len(good) == 2 and row.errors.failed == 1
    # A hung request lasts the full second; the batch's tg window must not stretch to it.
    assert figures(row) == run_metrics([good], 3, 16, 0.0).model_dump()
    assert len(row.tg_req_throughput.values) == 2
    last = max(r.token_timestamps[-1] for r in good)
    first = min(r.token_timestamps[0] for r in good)
    assert row.tg_throughput.mean >= 10 / (last - first) * 0.999  # 2 x (8 - first-chunk tokens) / span


def test_missing_usage_is_a_degraded_request_not_a_failure() -> None:
    with Scripted(["no_usage", "ok", "ok"]) as server:
        row, requests = measure(server)
    assert row.errors.failed == 0 and row.requests_without_usage == 1
    plain = requests[0]
    assert plain.error is None and not plain.usage_reported and plain.prompt_tokens == 0
    assert plain.total_tokens == 8 and plain.token_source == "token_ids"
    # Its pp t/s uses the bench's planned 16 tokens: the server did not say otherwise.
    assert row.pp_throughput.values[0] == pytest.approx(16 / (plain.first_response_ts - plain.start_ts))
    assert row.prompt_tokens_mismatch is None
    text = table(row)
    assert "no usage 1/3" in text and "1 of 3 good requests sent no usage block" in text


def test_server_counting_more_prompt_tokens_warns_and_pp_uses_the_servers_count() -> None:
    with Scripted(prompt_factor=1.5) as server:
        row, requests = measure(server, pp=64)
    assert [r.prompt_tokens for r in requests] == [96, 96, 96]
    mismatch = row.prompt_tokens_mismatch
    assert (mismatch.client_tokens, mismatch.server_tokens_min, mismatch.server_tokens_max) == (64, 96, 96)
    assert mismatch.relative_diff == pytest.approx(0.5) and (mismatch.requests, mismatch.checked) == (3, 3)
    assert row.pp_throughput.values == pytest.approx([96 / (r.first_response_ts - r.start_ts) for r in requests])
    lines = table(row).splitlines()
    assert lines[0].rstrip(" |").endswith("warnings")
    assert "prompt +50.0%" in lines[2]  # the pp row
    assert any("server counted 96 prompt tokens where the bench planned 64" in line for line in lines)


def test_matching_prompt_counts_give_no_warning() -> None:
    with Scripted() as server:
        row, requests = measure(server, pp=64)
    assert [r.prompt_tokens for r in requests] == [64, 64, 64]
    assert row.prompt_tokens_mismatch is None and row.requests_without_usage == 0
    text = table(row)
    assert "warnings" not in text and "\n\n" not in text  # no warning column, no notes


def test_every_request_failing_still_shows_the_test() -> None:
    with Scripted(["http500"] * 3) as server:
        row, _ = measure(server)
    assert (row.errors.failed, row.errors.used) == (3, 0) and row.tg_throughput is None
    assert row.errors.messages == ['HTTP 500: {"error": {"message": "boom", "type": "InternalServerError", '
                                   '"code": 500}} (x3)']  # fmt: skip
    text = table(row)
    assert "pp16" in text and "3/3 failed" in text and "3 of 3 requests failed, no figures: HTTP 500" in text


def run_bench(server: Scripted, **overrides) -> BenchReport:
    return asyncio.run(Bench(settings(server, **overrides), Words()).run())


def test_a_test_longer_than_max_model_len_fails_before_any_request() -> None:
    with Scripted(max_model_len=100) as server:
        with pytest.raises(BenchAbort) as failure:
            run_bench(server, pp=[64], tg=[32], depth=[0, 16], warmup=True)
        assert server.posts == 0
    message = str(failure.value)
    assert "depth 16 + pp 64 + tg 32 = 112 tokens exceed the served model's max_model_len 100" in message
    assert "--max-model-len 112" in message


@pytest.mark.parametrize("limit", [None, 104])
def test_tests_that_fit_or_an_unknown_max_model_len_run(limit: int | None) -> None:
    with Scripted(max_model_len=limit) as server:
        report = run_bench(server, pp=[64], tg=[8], depth=[0, 32], runs=1)
    assert [row.errors.failed for row in report.benchmarks] == [0, 0] and server.posts == 2
    assert [row.prompt_tokens_mismatch for row in report.benchmarks] == [None, None]


# `specsweep bench` itself: sizes checked at parsing, the context-length check and faults end to end.


@pytest.mark.parametrize(
    "flag,value,says",
    [
        ("--pp", "0", "must be a positive integer (1 or more), got 0"),
        ("--tg", "-5", "must be a positive integer (1 or more), got -5"),
        ("--runs", "0", "must be a positive integer"),
        ("--concurrency", "0", "must be a positive integer"),
        ("--depth", "-1", "must be 0 or more (0 = no context), got -1"),
        ("--pp", "many", "expected an integer, got 'many'"),
        ("--request-timeout", "0", "must be more than 0 seconds"),
    ],
)
def test_bad_sizes_fail_at_argument_parsing(flag: str, value: str, says: str, capsys) -> None:
    from specsweep.cli import parser

    with pytest.raises(SystemExit) as failure:
        parser().parse_args(["bench", "--base-url", "http://127.0.0.1:9/v1", flag, value])
    assert failure.value.code == 2
    assert f"argument {flag}: {says}" in capsys.readouterr().err


def test_depth_zero_and_positive_sizes_parse() -> None:
    from specsweep.cli import parser

    args = parser().parse_args(["bench", "--base-url", "u", "--tokenizer", "t", "--depth", "0", "4096", "--pp", "512",
                                "--tg", "1"])  # fmt: skip
    assert (args.depth, args.pp, args.tg, args.request_timeout) == ([0, 4096], [512], [1], 600)


def test_settings_refuse_bad_sizes_from_other_callers() -> None:
    from pydantic import ValidationError

    for bad in ({"pp": [0]}, {"tg": []}, {"depth": [-1]}, {"runs": 0}, {"concurrency": [0]}, {"request_timeout_s": 0}):
        with pytest.raises(ValidationError):
            BenchSettings(base_url="u", **bad)


@pytest.fixture
def words_tokenizer(tmp_path):
    """A word-level tokenizer.json and its text: its prompts round-trip, one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(50)]
    text = tmp_path / "text.txt"
    text.write_text(" ".join(words * 20))
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tmp_path / "tokenizer.json", text


def cli(server: Scripted, words_tokenizer, *extra: str) -> None:
    from specsweep.cli import parser

    tokenizer, text = words_tokenizer
    args = parser().parse_args(
        ["bench", "--base-url", server.url, "--tokenizer", str(tokenizer), "--text", str(text), "--endpoint",
         "completions", "--latency-mode", "none", "--no-warmup", "--tg", "8", "--runs", "3", *extra]
    )  # fmt: skip
    args.func(args)


def test_cli_names_the_sizes_that_exceed_max_model_len(words_tokenizer) -> None:
    with Scripted(max_model_len=2048) as server:
        with pytest.raises(SystemExit) as failure:
            cli(server, words_tokenizer, "--pp", "2048")
        assert server.posts == 0
    assert str(failure.value).startswith(
        "specsweep bench: depth 0 + pp 2048 + tg 8 = 2056 tokens exceed the served model's max_model_len 2048"
    )


def test_cli_reports_a_timed_out_request_and_exits_nonzero(words_tokenizer, capsys) -> None:
    with Scripted(["ok", "hang", "ok"]) as server:
        with pytest.raises(SystemExit) as failure:
            cli(server, words_tokenizer, "--pp", "16", "--request-timeout", str(HANG_TIMEOUT_S))
    assert failure.value.code == 1
    out = capsys.readouterr().out
    assert "1/3 failed" in out and f"figures use the 2 good ones: timeout after {HANG_TIMEOUT_S} s" in out
    assert "warnings" not in out  # the word tokenizer's prompts are exactly what the server counts
