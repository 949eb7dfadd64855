"""Where does a cell's vLLM start go? Starts the embedded model's server as a cell would, several times, and
splits each start into phases from the server log, then times a short greedy generation.

    .venv/bin/python benchmarks/server_start.py                       # the default cell (bf16 base, none)
    .venv/bin/python benchmarks/server_start.py drafter=ngram k=4 --runs 3
    .venv/bin/python benchmarks/server_start.py --env VLLM_CPU_KVCACHE_SPACE=1

Needs the image and model built once (README command 1 builds them; so do the `specsweep job image` and
`specsweep job model` entry points). Phase boundaries are the first log line of each step (1 s resolution in vLLM's log).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from specsweep.cell import plan_launch
from specsweep.config.compose import compose_cell
from specsweep.images.base import build_image
from specsweep.models.prepare import prepare_model
from specsweep.serve.server import VllmServer

# (phase name, regex of the log line that ends it), in order.
MARKS = [
    ("api server imports", r"\(APIServer pid=\d+\) INFO .*version"),
    ("config + tokenizer", r"Resolved architecture"),
    ("engine core spawn + imports", r"\(EngineCore pid=\d+\) INFO .*Initializing a V1 LLM engine"),
    ("worker spawn + imports", r"Starting to load model"),
    ("load weights", r"Loading weights took"),
    ("kv cache + warmup", r"init engine \(profile, create kv cache, warmup model\) took"),
    ("engine ready -> http", r"Starting vLLM server on"),
]
STAMP = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d)")


def phases(log: str, started: float, healthy: float) -> dict[str, float]:
    year = datetime.now().year
    found: dict[str, float] = {}
    for name, pattern in MARKS:
        for line in log.splitlines():
            if re.search(pattern, line) and (stamp := STAMP.search(line)):
                found[name] = datetime.strptime(f"{year}-{stamp.group(1)}", "%Y-%m-%d %H:%M:%S").timestamp()
                break
    out, previous = {}, started
    for name, _ in MARKS:
        if name in found:
            out[name] = found[name] - previous
            previous = found[name]
    out["http -> /health ok"] = healthy - previous
    out["total to healthy"] = healthy - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE added to the server's environment")
    parser.add_argument("--tokens", type=int, default=128, help="greedy tokens generated after each start")
    args = parser.parse_args()

    cfg = compose_cell(args.overrides).cell
    model, image = prepare_model(cfg.model), build_image(cfg.image)
    results: list[dict[str, float]] = []
    speeds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            launch = plan_launch(cfg, model.location, image, "bench", "start", Path(tmp))
            launch.command.env.update(dict(item.split("=", 1) for item in args.env))
            log = Path(tmp) / f"server-{run}.log"
            started = time.time()
            with VllmServer(launch.command, log, startup_timeout_s=600) as server:
                healthy = time.time()
                body = {"model": launch.command.served_name, "prompt": "def fibonacci(n):", "max_tokens": args.tokens,
                        "temperature": 0, "ignore_eos": True}  # fmt: skip
                begin = time.monotonic()
                response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=600).json()
                speeds.append(response["usage"]["completion_tokens"] / (time.monotonic() - begin))
            text = log.read_text(errors="replace")
            results.append(phases(text, started, healthy))
            if run == 0:
                # How vLLM placed the model's threads: what the tok/s below depend on.
                for line in text.splitlines():
                    if re.search(r"core ids=|reserved_cpus=|Reducing Torch threads|OMP_NUM_THREADS|LD_PRELOAD", line):
                        print("  " + line.split("] ", 1)[-1].strip()[:160])
            print(f"run {run + 1}/{args.runs}: healthy after {healthy - started:.1f} s, {speeds[-1]:.1f} tok/s", flush=True)
    serving = launch.serving
    print(f"\ncell: {' '.join(args.overrides) or '(defaults)'}; dtype {serving.dtype if serving else 'auto'}; "
          f"extra env: {' '.join(args.env) or 'none'}; {args.runs} starts")  # fmt: skip
    print(f"{'phase':32} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name in results[0]:
        values = [r[name] for r in results if name in r]
        print(f"{name:32} {statistics.median(values):9.1f} {min(values):7.1f} {max(values):7.1f}")
    print(f"{'request incl. prefill (tok/s)':32} {statistics.median(speeds):9.1f} {min(speeds):7.1f} {max(speeds):7.1f}")


if __name__ == "__main__":
    main()
