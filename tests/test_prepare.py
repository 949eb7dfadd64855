"""The packaged GGUF becomes a servable HF dir with the right tokenizer and recorded hashes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from project import job_config
from tokenizers import Tokenizer

from specsweep.cache_check import sha256_file

pytestmark = pytest.mark.slow

EXPECTED_IDS = [2, 9259, 1902, 236888, 669, 3823, 8864, 37423]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    receipt = tmp_path_factory.mktemp("prepare") / "model.json"
    subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "job", "model", "--receipt", str(receipt),
         "--job-config", job_config(receipt.parent, "model")],
        check=True,
        timeout=1800,
    )
    return json.loads(receipt.read_text())


def test_tokenizer_matches_gemma(prepared: dict) -> None:
    tokenizer = Tokenizer.from_file(str(Path(prepared["location"]) / "tokenizer.json"))
    assert tokenizer.encode("Hello world! The quick brown fox").ids == EXPECTED_IDS
    # Runs of spaces are SentencePiece space marks, not one token per character.
    assert len(tokenizer.encode("        return x").ids) <= 4


def test_gguf_and_weights_hashes_are_recorded_and_true(prepared: dict) -> None:
    location = Path(prepared["location"])
    assert prepared["weights_sha256"], "no weight files recorded"
    for name, digest in prepared["weights_sha256"].items():
        assert sha256_file(location / name) == digest
    # The package's own published digest of the assembled GGUF.
    assert prepared["source_sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_config_carries_gemma_eos_ids(prepared: dict) -> None:
    config = json.loads((Path(prepared["location"]) / "config.json").read_text())
    assert config["eos_token_id"] == [1, 106]
    assert config["architectures"] == ["Gemma3ForCausalLM"]


def test_long_context_prompts_fit_their_targets(prepared: dict, root: Path) -> None:
    tokenizer = Tokenizer.from_file(str(Path(prepared["location"]) / "tokenizer.json"))

    def tokens(name: str) -> int:
        return len(tokenizer.encode((root / "data/workloads" / name).read_text()).ids)

    assert tokens("longctx_8k.txt") >= 8000  # the Spark's long-context prompt
    assert tokens("longctx_cpu.txt") + 48 <= 2048  # fits the embedded server's max_model_len
