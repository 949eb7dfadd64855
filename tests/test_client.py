"""The streaming client over HTTP, against a local scripted OpenAI-style SSE server.

vLLM always sends token_ids when asked; the scripted server also plays servers that send only usage,
or neither, which no real server here can be made to do.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest

from specsweep.bench.stream import stream

TOKENS = list(range(100, 112))  # 12 tokens


def make_server(mode: str, tokens_per_chunk: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if mode == "error":
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b'{"error":"boom"}')
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for start in range(0, len(TOKENS), tokens_per_chunk):
                ids = TOKENS[start : start + tokens_per_chunk]
                choice = {"index": 0, "text": "".join(f"t{i} " for i in ids), "finish_reason": None}
                if mode == "malformed" and start:
                    self.wfile.write(b"data: {not json\n\n")
                    break
                if mode == "token_ids":
                    choice["token_ids"] = ids
                self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            if mode in ("token_ids", "usage"):
                usage = {"prompt_tokens": 5, "completion_tokens": len(TOKENS), "total_tokens": 5 + len(TOKENS)}
                final = {"choices": [], "usage": usage}
                if mode == "token_ids":
                    # vLLM with --per-request-spec-decode-metrics puts these on the final usage chunk.
                    final["metrics"] = {"speculative_decoding": {"num_spec_steps": 4, "num_draft_tokens": 16,
                                        "num_accepted_draft_tokens": 8, "acceptance_histogram": [0, 2, 2, 0, 0]}}  # fmt: skip
                self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(url: str):
    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            return await stream(session, url, {"prompt": "p", "max_tokens": 12, "stream": True}, {}, chat=False)

    return asyncio.run(go())


@pytest.mark.parametrize(
    "mode,per_chunk,expected,source",
    [
        ("token_ids", 1, 12, "token_ids"),
        ("token_ids", 4, 12, "token_ids"),
        ("usage", 4, 12, "usage"),
        ("chunks", 4, 3, "chunks"),
    ],
)
def test_counts_tokens_not_chunks(mode: str, per_chunk: int, expected: int, source: str) -> None:
    server = make_server(mode, per_chunk)
    try:
        result = run(f"http://127.0.0.1:{server.server_port}/v1/completions")
    finally:
        server.shutdown()
    assert result.error is None
    assert result.total_tokens == expected
    assert result.token_source == source
    assert result.start_ts < result.first_response_ts <= result.first_token_ts <= result.end_ts
    if mode == "token_ids":
        assert result.token_ids == TOKENS
        assert result.text.startswith("t100 t101")
        assert result.spec_stats["num_accepted_draft_tokens"] == 8
    else:
        assert result.spec_stats is None


def test_http_error_is_a_failed_result_not_a_fast_success() -> None:
    server = make_server("error", 1)
    try:
        result = run(f"http://127.0.0.1:{server.server_port}/v1/completions")
    finally:
        server.shutdown()
    assert result.error.startswith("HTTP 500") and result.total_tokens == 0


def test_malformed_stream_is_a_failed_result() -> None:
    server = make_server("malformed", 4)
    try:
        result = run(f"http://127.0.0.1:{server.server_port}/v1/completions")
    finally:
        server.shutdown()
    assert result.error.startswith("malformed SSE: a data line is not JSON")


def test_unreachable_server_is_a_failed_result() -> None:
    result = run("http://127.0.0.1:9/v1/completions")
    assert result.error and "Connect" in result.error


def test_a_first_chunk_longer_than_aiohttps_line_limit_is_read() -> None:
    # vLLM's first chunk carries all prompt_token_ids when return_token_ids is set: ~1.4 MB at 200k tokens.
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            first = {"choices": [{"index": 0, "text": "a", "token_ids": [1]}], "prompt_token_ids": list(range(200_000))}
            last = {"choices": [{"index": 0, "text": "b", "token_ids": [2]}]}
            usage = {"choices": [], "usage": {"prompt_tokens": 200_000, "completion_tokens": 2}}
            for event in (first, last, usage):
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run(f"http://127.0.0.1:{server.server_port}/v1/completions")
    finally:
        server.shutdown()
    assert result.error is None and result.token_ids == [1, 2] and result.prompt_tokens == 200_000
