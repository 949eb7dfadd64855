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
