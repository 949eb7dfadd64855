"""`specsweep bench` against real vLLM (CPU) serving the packaged model with the ngram drafter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specsweep.cell import plan_launch
from specsweep.config.compose import compose_cell
from specsweep.images.base import build_image
from specsweep.models.prepare import prepare_model
from specsweep.serve.server import VllmServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    cell = compose_cell(["drafter=ngram", "k=4"]).cell
    model = prepare_model(cell.model)
    image = build_image(cell.image)
    where = tmp_path_factory.mktemp("bench")
    # Launched as a cell would be on this host (dtype, preloads, executor).
    command = plan_launch(cell, model.location, image, "bench", "bench", where).command
    with VllmServer(command, where / "server.log", startup_timeout_s=cell.serve.startup_timeout_s) as running:
        yield running, model.location


def bench(server, tmp_path: Path, *args: str) -> dict:
    running, model_dir = server
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "bench", "--base-url", f"{running.base_url}/v1",
         "--tokenizer", model_dir, "--format", "json", "--save-result", str(out), *args],
        check=True, timeout=900,
    )  # fmt: skip
    return json.loads(out.read_text())


def test_completions_rows_carry_exact_tokens_and_acceptance(server, tmp_path: Path) -> None:
    # ngram drafts only when the text repeats itself; unseeded windows of 16 tokens sometimes never did (a CI run
    # saw 0 drafts), so the windows are fixed and the output long enough for the greedy 270M model to loop.
    report = bench(server, tmp_path, "--endpoint", "completions", "--pp", "64", "--tg", "48", "--runs", "2",
                   "--concurrency", "1", "2", "--seed", "3")  # fmt: skip
    assert report["model"] == "gemma-3-270m" and report["max_concurrency"] == 2
    assert [row["concurrency"] for row in report["benchmarks"]] == [1, 2]
    for row in report["benchmarks"]:
        assert row["errors"]["failed"] == 0 and row["errors"]["total"] == 2 * row["concurrency"]
        assert row["token_count_source"] == ["token_ids"]
        assert row["tg_throughput"]["mean"] > 0 and row["pp_throughput"]["mean"] > 0
        assert len(row["ttfr"]["values"]) == 2 * row["concurrency"]
        assert row["acceptance"] is not None and row["acceptance"]["drafts"] > 0
        assert 0 <= row["acceptance"]["acceptance_rate"] <= 1


def test_chat_endpoint_with_depth(server, tmp_path: Path) -> None:
    report = bench(server, tmp_path, "--endpoint", "chat", "--pp", "32", "--tg", "8", "--depth", "64", "--runs", "1",
                   "--latency-mode", "generation")  # fmt: skip
    (row,) = report["benchmarks"]
    assert row["context_size"] == 64 and row["errors"]["failed"] == 0
    assert row["token_count_source"] == ["token_ids"]
    assert report["latency_mode"] == "generation" and report["latency_ms"] > 0


def prefix_cache_counters(base_url: str) -> tuple[float, float]:
    """vLLM's prefix-cache counters (tokens queried, tokens found in the cache) from /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"vllm:prefix_cache_queries": 0.0, "vllm:prefix_cache_hits": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name.removesuffix("_total") in totals and sample.name.endswith("_total"):
                totals[sample.name.removesuffix("_total")] += sample.value
    return totals["vllm:prefix_cache_queries"], totals["vllm:prefix_cache_hits"]


def test_task_requests_are_prefilled_not_served_from_the_prefix_cache(server) -> None:
    """The same task prompt in every request would make pp and TTFT measure prefix-cache hits (vLLM caches prefixes
    by default): each request's own marker makes the server prefill it, as its counters show."""
    import asyncio

    from specsweep.bench.runner import Bench, BenchSettings

    running, _ = server
    prompt = (Path(__file__).resolve().parents[1] / "data/prompts/code_edit.txt").read_text()

    def hits_of(unique: bool) -> tuple[float, float]:
        settings = BenchSettings(base_url=f"{running.base_url}/v1", model="gemma-3-270m", runs=2, concurrency=[2],
                                 latency_mode="none", warmup=False, unique_prompts=unique)  # fmt: skip

        async def measured() -> None:
            bench = Bench(settings)
            async with bench.session() as session:
                await bench.task(session, "code_edit", prompt, 4, 2)

        before = prefix_cache_counters(running.base_url)
        asyncio.run(measured())
        after = prefix_cache_counters(running.base_url)
        return after[0] - before[0], after[1] - before[1]

    # The control: identical prompts (the bench before markers). The first run's two requests arrive together and
    # both prefill; the second run's find all but their last partial block in the cache (measured: 384 of 996 tokens).
    queried, hit = hits_of(unique=False)
    assert queried > 0 and hit / queried > 0.3, (queried, hit)
    queried, hit = hits_of(unique=True)
    # Every block hash chains from the first block, which holds the marker: nothing of the prompt is found.
    assert queried > 0 and hit == 0, (queried, hit)
