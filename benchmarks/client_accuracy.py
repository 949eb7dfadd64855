"""How accurate and how fast is specsweep's bench client? Measured against a scripted local server.

The scripted server streams an OpenAI-style completion with known timing: the first chunk after
`ttfr` seconds, then `tokens_per_chunk` tokens per chunk at an exact token rate. The client (pinned
to one core, the server to the other) measures it with the same code `specsweep bench` uses, and
the script prints the error against the truth for tg t/s, pp t/s and ttfr, then the highest token
rate the client follows within 1 %.

    .venv/bin/python benchmarks/client_accuracy.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import time

import aiohttp
from aiohttp import web

from specsweep.bench.stats import run_metrics
from specsweep.bench.stream import stream

PROMPT_TOKENS = 512


def scripted_server(port: int, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        ttfr, rate, per_chunk = body["script_ttfr"], body["script_rate"], body["script_tokens_per_chunk"]
        total = body["max_tokens"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        started = time.perf_counter()
        sent = 0
        chunk_index = 0
        while sent < total:
            ids = list(range(sent, min(total, sent + per_chunk)))
            # Chunk i leaves at ttfr + (its last token - first chunk's last token) / rate: exact token pacing.
            due = started + ttfr + (chunk_index * per_chunk) / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            choice = {"index": 0, "text": "x" * len(ids), "token_ids": ids, "finish_reason": None}
            await response.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            sent += len(ids)
            chunk_index += 1
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": total, "total_tokens": PROMPT_TOKENS + total}
        await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def measure(port: int, ttfr: float, rate: float, per_chunk: int, tokens: int, runs: int) -> dict:
    url = f"http://127.0.0.1:{port}/v1/completions"
    async with aiohttp.ClientSession() as session:
        batches = []
        cpu_started = time.process_time()
        for _ in range(runs):
            payload = {
                "prompt": "p",
                "max_tokens": tokens,
                "stream": True,
                "script_ttfr": ttfr,
                "script_rate": rate,
                "script_tokens_per_chunk": per_chunk,
            }
            result = await stream(session, url, payload, {}, chat=False)
            assert result.error is None, result.error
            assert result.total_tokens == tokens, (result.total_tokens, tokens)
            batches.append([result])
        cpu = time.process_time() - cpu_started
    metrics = run_metrics(batches, 1, PROMPT_TOKENS, 0.0)
    return {
        "tg": metrics.tg_throughput.mean,
        "pp": metrics.pp_throughput.mean,
        "ttfr_ms": metrics.ttfr.mean,
        "client_cpu_s_per_1k_tokens": cpu / (runs * tokens) * 1000,
    }


def error_pct(measured: float, truth: float) -> float:
    return (measured - truth) / truth * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    client_core, server_core = (cores[0], cores[1]) if len(cores) > 1 else (cores[0], None)
    os.sched_setaffinity(0, {client_core})
    port = free_port()
    server = multiprocessing.Process(target=scripted_server, args=(port, server_core), daemon=True)
    server.start()
    time.sleep(1.0)
    try:
        print(f"client on core {client_core}, scripted server on core {server_core}; {args.runs} runs per case\n")
        print("accuracy (truth: ttfr 0.5 s, pp = 512 tokens / 0.5 s = 1024 t/s)")
        print(f"{'tok/s':>8} {'tok/chunk':>9} {'tg meas':>10} {'tg err %':>9} {'pp err %':>9} {'ttfr err %':>10}")
        worst = 0.0
        for rate, per_chunk, tokens in [(40, 1, 80), (40, 4, 80), (1000, 1, 2000), (1000, 4, 2000)]:
            m = asyncio.run(measure(port, 0.5, rate, per_chunk, tokens, args.runs))
            errors = [error_pct(m["tg"], rate), error_pct(m["pp"], PROMPT_TOKENS / 0.5), error_pct(m["ttfr_ms"], 500)]
            worst = max(worst, *map(abs, errors))
            print(f"{rate:>8} {per_chunk:>9} {m['tg']:>10.1f} {errors[0]:>9.3f} {errors[1]:>9.3f} {errors[2]:>10.3f}")
        print(f"worst |error| {worst:.3f} %\n")

        print("headroom: highest paced rate followed within 1 % (client on one core)")
        print(f"{'tok/chunk':>9} {'rate':>8} {'tg meas':>10} {'err %':>7} {'client CPU ms / 1k tok':>23}")
        for per_chunk in (1, 4):
            best = 0
            for rate in (5_000, 10_000, 20_000, 40_000, 80_000):
                m = asyncio.run(measure(port, 0.05, rate, per_chunk, rate * 2, args.runs))
                err = error_pct(m["tg"], rate)
                print(f"{per_chunk:>9} {rate:>8} {m['tg']:>10.0f} {err:>7.2f} {m['client_cpu_s_per_1k_tokens'] * 1000:>23.2f}")
                if abs(err) <= 1.0:
                    best = rate
                else:
                    break
            print(f"  -> sustained within 1 %: {best} tok/s at {per_chunk} token(s) per chunk")
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
