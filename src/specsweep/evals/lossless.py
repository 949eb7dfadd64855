"""Losslessness: a drafter must not change greedy outputs. Every cell generates from a fixed prompt set at
concurrency 1 (under load, batch shapes change floating-point reductions and outputs may legitimately differ, so
only concurrency 1 is compared); a drafter cell's tokens are then compared with its quant's no-drafter cell's."""

from __future__ import annotations

import hashlib
import json

import httpx
from pydantic import BaseModel

from specsweep.bench.corpus import load_tokenizer
from specsweep.config.schema import LosslessCfg
from specsweep.paths import project_relative
from specsweep.records.evals import GreedyOutput, GreedyRecord

# How much text around a divergence the reports show.
DIVERGENCE_TOKENS = 12


class LosslessPrompt(BaseModel):
    id: str
    prompt: str


class Divergence(BaseModel):
    prompt_id: str
    # Index of the first generated token that differs (0 = the first generated token).
    position: int
    reference_text: str
    candidate_text: str


class LosslessResult(BaseModel):
    # Σ common-prefix tokens / Σ max(len(reference), len(candidate)) over the prompts, in %.
    match_pct: float
    matched_tokens: int
    compared_tokens: int
    prompts: int
    divergent_prompts: int
    first_divergence: Divergence | None


def load_prompts(path: str) -> list[LosslessPrompt]:
    lines = project_relative(path).read_text().splitlines()
    prompts = [LosslessPrompt.model_validate_json(line) for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts; one JSON object per line with id and prompt (eval.lossless.prompts)")
    return prompts


def generate(base_url: str, model: str, cfg: LosslessCfg, tokenizer_dir: str, timeout_s: float) -> GreedyRecord:
    """One greedy request at a time (concurrency 1), token ids from the server (`return_token_ids`)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    outputs = []
    with httpx.Client(timeout=timeout_s) as client:
        for prompt in load_prompts(cfg.prompts):
            response = client.post(f"{base_url}/v1/completions", json={
                "model": model, "prompt": prompt.prompt, "max_tokens": cfg.max_tokens, "temperature": 0.0,
                "return_token_ids": True,
            })  # fmt: skip
            if response.status_code != 200:
                raise RuntimeError(f"lossless prompt {prompt.id}: HTTP {response.status_code}: {response.text[:300]}")
            choice = response.json()["choices"][0]
            ids = choice["token_ids"]
            outputs.append(GreedyOutput(
                id=prompt.id, token_ids=ids, pieces=[tokenizer.decode([i], skip_special_tokens=False) for i in ids],
                finish_reason=choice.get("finish_reason"),
            ))  # fmt: skip
    return GreedyRecord(
        prompts=cfg.prompts,
        prompts_sha256=hashlib.sha256(project_relative(cfg.prompts).read_bytes()).hexdigest(),
        max_tokens=cfg.max_tokens,
        outputs=outputs,
    )


class NothingCompared(ValueError):
    """Both cells' greedy outputs are empty: there is no losslessness to report."""


def compare_greedy(reference: GreedyRecord, candidate: GreedyRecord) -> LosslessResult:
    if (reference.prompts_sha256, reference.max_tokens) != (candidate.prompts_sha256, candidate.max_tokens):
        raise ValueError("the two cells generated from different prompt sets or max_tokens (eval.lossless differs)")
    matched = compared = divergent = 0
    first: Divergence | None = None
    by_id = {output.id: output for output in candidate.outputs}
    for ref in reference.outputs:
        cand = by_id[ref.id]
        common = 0
        for a, b in zip(ref.token_ids, cand.token_ids):
            if a != b:
                break
            common += 1
        length = max(len(ref.token_ids), len(cand.token_ids))
        matched, compared = matched + common, compared + length
        if common < length:
            divergent += 1
            if first is None:
                first = Divergence(
                    prompt_id=ref.id,
                    position=common,
                    reference_text="".join(ref.pieces[common : common + DIVERGENCE_TOKENS]),
                    candidate_text="".join(cand.pieces[common : common + DIVERGENCE_TOKENS]),
                )
    if compared == 0:
        # Nothing generated on either side proves nothing: never 100 % by default.
        raise NothingCompared(
            f"no greedy tokens to compare ({len(reference.outputs)} prompts, both sides empty): the servers generated "
            "nothing; see the cells' server logs"
        )
    return LosslessResult(
        match_pct=100.0 * matched / compared,
        matched_tokens=matched,
        compared_tokens=compared,
        prompts=len(reference.outputs),
        divergent_prompts=divergent,
        first_divergence=first,
    )


def describe(result: LosslessResult) -> str:
    """One line for tables and reports."""
    if result.first_divergence is None:
        return f"identical ({result.compared_tokens} tokens, {result.prompts} prompts, concurrency 1)"
    d = result.first_divergence
    return (f"{result.match_pct:.1f} % of tokens match at concurrency 1; {result.divergent_prompts}/{result.prompts} "
            f"prompts diverge, first {d.prompt_id} at token {d.position}: expected {json.dumps(d.reference_text)}, "
            f"got {json.dumps(d.candidate_text)}")  # fmt: skip
