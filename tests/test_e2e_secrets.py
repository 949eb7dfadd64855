"""Fake credentials in the environment of the shared end-to-end sweep: none reaches any output or command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from project import FAKE_SECRETS

pytestmark = pytest.mark.slow


def files_holding(root: Path, values: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {name}" for name, value in FAKE_SECRETS.items() if value.encode() in data]
    return hits


def test_no_secret_in_results_logs_wandb_or_job_logs(swept: Path) -> None:
    searched = [swept / "results", swept / ".snakemake"]
    # What the run wrote: every cell's records and server log, job logs, W&B's offline runs, Snakemake's logs.
    assert (swept / "results/_logs/run_cell").is_dir() and list((swept / "results/embedded/wandb").glob("offline-run-*"))
    assert list((swept / ".snakemake/log").glob("*.snakemake.log"))
    hits = [hit for root in searched for hit in files_holding(root, list(FAKE_SECRETS.values()))]
    assert hits == []


def test_no_secret_in_any_command_line_during_the_sweep(swept: Path) -> None:
    sampled = json.loads((swept.parent / f"{swept.name}-processes.json").read_text())
    lines = sampled["command_lines"]
    # The sampler saw the sweep's own processes: specsweep jobs and vLLM servers (which retitle themselves
    # `VLLM::...` through setproctitle, so `ps` shows that title rather than their argv).
    assert any("specsweep.cli job cell" in line for line in lines)
    assert any(line.startswith("VLLM::") or "vllm.entrypoints" in line for line in lines)
    assert [line for line in lines if any(value in line for value in FAKE_SECRETS.values())] == []


def test_servers_received_only_the_forwarded_secret(swept: Path) -> None:
    sampled = json.loads((swept.parent / f"{swept.name}-processes.json").read_text())
    # Every process of every cell server held at most the forwarded secret, and the servers did get it. (A helper
    # process of a server's tree may hold none: with the evals, a short-lived one without HF_TOKEN was sampled once.)
    assert all(set(held) <= {"HF_TOKEN"} for held in sampled["server_secrets"]), sampled["server_secrets"]
    assert ["HF_TOKEN"] in sampled["server_secrets"]
    manifest = json.loads((swept / "results/embedded/gemma3_270m-bf16-ngram-k4/manifest.json").read_text())
    assert manifest["server_env_forwarded"] == ["HF_TOKEN"]
