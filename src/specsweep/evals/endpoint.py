"""Quality through a served endpoint: prompt logprobs of the held-out windows from a cell's running server.

Works for any checkpoint vLLM can serve (hub quants of a 31B model included): the no-drafter cell of each quant
scores the same token windows (specsweep.evals.windows) with `prompt_logprobs: top_k`, inside its own server
lifetime; specsweep.evals.distributions compares them with the base's cell and with the in-process figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from specsweep.atomic import write_text
from specsweep.config.schema import EndpointQualityCfg
from specsweep.evals.distributions import Position, ScoredWindows
from specsweep.evals.windows import heldout_windows, windows_sha256
from specsweep.paths import project_relative
from specsweep.records.evals import EndpointRecord

SCORED_FILE = "prompt_logprobs.json"


def parse_prompt_logprobs(window: list[int], prompt_logprobs: list[dict | None], top_k: int) -> list[Position]:
    """vLLM's `prompt_logprobs`: per prompt token (the first has none) a map token id -> {logprob, rank}, holding
    the top-k by rank plus the actual token wherever it ranks lower."""
    if len(prompt_logprobs) != len(window):
        raise ValueError(f"the server returned prompt logprobs for {len(prompt_logprobs)} of {len(window)} tokens")
    positions = []
    for target, entries in zip(window[1:], prompt_logprobs[1:]):
        ranked = sorted(((int(token), e["rank"], e["logprob"]) for token, e in entries.items()), key=lambda x: x[1])
        if str(target) not in entries:
            raise ValueError(f"the server's prompt logprobs lack the prompt token {target}")
        positions.append(Position(
            target=target,
            target_logprob=entries[str(target)]["logprob"],
            top=[(token, logprob) for token, rank, logprob in ranked if rank <= top_k],
        ))  # fmt: skip
    return positions


def score(base_url: str, model: str, tokenizer_dir: str, cfg: EndpointQualityCfg, out_dir: Path, timeout_s: float) -> EndpointRecord:
    started = time.monotonic()
    windows = heldout_windows(tokenizer_dir, project_relative(cfg.text), cfg.window, cfg.num_windows)
    scored = []
    with httpx.Client(timeout=timeout_s) as client:
        for window in windows:
            # Token ids in, so the server scores exactly these tokens (no second BOS, no re-tokenization).
            response = client.post(f"{base_url}/v1/completions", json={
                "model": model, "prompt": window, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": cfg.top_k,
            })  # fmt: skip
            if response.status_code != 200:
                raise RuntimeError(f"prompt logprobs: HTTP {response.status_code}: {response.text[:300]}")
            scored.append(parse_prompt_logprobs(window, response.json()["choices"][0]["prompt_logprobs"], cfg.top_k))
    record = ScoredWindows(source="endpoint", windows_sha256=windows_sha256(windows), top_k=cfg.top_k, windows=scored)
    write_text(out_dir / SCORED_FILE, record.model_dump_json())
    return EndpointRecord(
        scored=SCORED_FILE,
        windows_sha256=record.windows_sha256,
        n_windows=len(windows),
        window=cfg.window,
        top_k=cfg.top_k,
        n_tokens=record.n_tokens,
        wall_s=round(time.monotonic() - started, 2),
    )
