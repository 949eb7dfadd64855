"""`specsweep bench`: llama-benchy-compatible benchmark of any OpenAI-compatible server."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from specsweep.cli.common import command


def _extra_body(items: list[str]) -> dict:
    """llama-benchy's --extra-body: key=value or key:value, comma-separated or repeated; values as JSON."""
    import json

    body: dict = {}
    for item in items:
        for pair in filter(None, (part.strip() for part in item.split(","))):
            key, sep, value = pair.partition("=") if "=" in pair else pair.partition(":")
            if not sep:
                raise SystemExit(f"--extra-body {pair!r}: expected key=value")
            try:
                body[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                body[key.strip()] = value
    return body


def _api_key(args: argparse.Namespace) -> str | None:
    """The key comes from the environment: on the command line, `ps` would show it to every user of the host."""
    if args.api_key is not None:
        raise SystemExit(
            "specsweep bench: --api-key would show the key to anyone running `ps`; export it instead "
            f"(export {args.api_key_env}=...) or name the variable holding it with --api-key-env VAR"
        )
    return os.environ.get(args.api_key_env) or None


def cmd_bench(args: argparse.Namespace) -> None:
    import asyncio

    from specsweep.atomic import write_text
    from specsweep.bench.corpus import PromptSource, load_tokenizer
    from specsweep.bench.formats import FORMATS
    from specsweep.bench.inputs import BenchAbort
    from specsweep.bench.runner import Bench, BenchSettings

    api_key = _api_key(args)
    settings = BenchSettings(
        base_url=args.base_url,
        api_key=api_key,
        model=args.model,
        pp=args.pp,
        tg=args.tg,
        depth=args.depth,
        runs=args.runs,
        concurrency=args.concurrency,
        latency_mode=args.latency_mode,
        warmup=not args.no_warmup,
        endpoint=args.endpoint,
        exact_tg=not args.no_exact_tg,
        prefix_caching=args.no_cache_busting,
        adapt_prompt=args.adapt_prompt,
        request_timeout_s=args.request_timeout,
        extra_body=_extra_body(args.extra_body),
    )
    prompts = PromptSource(load_tokenizer(args.tokenizer), args.text, seed=args.seed)
    try:
        report = asyncio.run(Bench(settings, prompts).run())
    except BenchAbort as err:
        raise SystemExit(f"specsweep bench: {err}") from None
    output = FORMATS[args.format](report)
    if args.save_result:
        write_text(Path(args.save_result), output + "\n")
        print(f"[bench] saved {args.format} to {args.save_result}", file=sys.stderr)
    else:
        print(output)
    if any(row.errors.failed for row in report.benchmarks):
        raise SystemExit(1)


def register(sub: argparse._SubParsersAction) -> None:
    from specsweep.bench.inputs import non_negative_int, positive_float, positive_int

    p = command(sub, "bench", "llama-benchy-compatible benchmark of any OpenAI-compatible server")
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the key sent as a Bearer token (unset: no key); never "
                        "written to results")  # fmt: skip
    p.add_argument("--api-key", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help="served model name (none: the first of /models)")
    p.add_argument("--tokenizer", required=True,
                   help="the served model's dir or tokenizer.json, to cut exact-length prompts (nothing is fetched)")  # fmt: skip
    # Sizes are checked here, before any request; depth + pp + tg against max_model_len once the server answers.
    p.add_argument("--pp", type=positive_int, nargs="+", default=[2048], help="prompt tokens per test")
    p.add_argument("--tg", type=positive_int, nargs="+", default=[32], help="generated tokens per test")
    p.add_argument("--depth", type=non_negative_int, nargs="+", default=[0], help="context tokens before the prompt")
    p.add_argument("--runs", type=positive_int, default=3, help="measured runs per test (after the warmup)")
    p.add_argument("--concurrency", type=positive_int, nargs="+", default=[1], help="requests in flight per test")
    p.add_argument("--request-timeout", type=positive_float, default=600,
                   help="seconds per request, sending to last byte; a slower request counts as failed")  # fmt: skip
    p.add_argument("--latency-mode", choices=["api", "generation", "none"], default="api",
                   help="how the network latency subtracted from TTFT is measured (llama-benchy's modes)")  # fmt: skip
    p.add_argument("--no-warmup", action="store_true", help="measure from the first request (no warmup request)")
    # Not llama-benchy's --enable-prefix-caching (a context-load + inference measurement, not implemented here).
    p.add_argument("--no-cache-busting", action="store_true",
                   help="send prompts without the unique suffix that defeats the server's prefix cache")  # fmt: skip
    p.add_argument("--no-adapt-prompt", dest="adapt_prompt", action="store_false",
                   help="do not shrink prompts by the tokens the server's template adds")  # fmt: skip
    p.add_argument("--endpoint", choices=["chat", "completions"], default="chat", help="OpenAI endpoint to call")
    p.add_argument("--no-exact-tg", action="store_true", help="do not force tg tokens with min_tokens + ignore_eos")
    p.add_argument("--extra-body", action="append", default=[], help="key=value merged into every request")
    p.add_argument("--text", default=None, help="text to cut prompts from (none: data/text/alice.txt)")
    p.add_argument("--seed", type=int, default=None,
                   help="fix prompt windows (a rerun then replays prompts the server may have cached)")  # fmt: skip
    p.add_argument("--format", choices=["md", "json", "csv"], default="md", help="output format (llama-benchy's)")
    p.add_argument("--save-result", default=None, help="write the output to this file (none: print it)")
    p.set_defaults(func=cmd_bench)
