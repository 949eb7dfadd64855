"""The Spark users' own command lines come out of config, and vLLM's own CLI code accepts every Spark argv.

Parsing runs in the CPU vLLM env (same vLLM 0.32 CLI code as the Spark image's `vllm serve`): unknown flags, bad
choices and malformed JSON fail there exactly as they would on the Spark.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from specsweep.config.compose import compose_cell
from specsweep.config.grid import expand
from specsweep.config.schema import CellCfg
from specsweep.images.base import build_image
from project import server_command

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
PROBE = HERE.parent / "src/specsweep/serve/vllm_cli_probe.py"
# What specsweep adds on purpose: the pinned revision of what is served. (It also passes `--seed 0`, vLLM 0.32's
# default, so the parsed seed matches.)
PINNED = {"revision"}


def users_commands() -> list[list[str]]:
    """Arguments after `vllm serve` of each command in tests/data/spark_users_commands.txt."""
    paragraphs = (HERE / "data/spark_users_commands.txt").read_text().split("\n\n")
    commands = []
    for paragraph in paragraphs:
        argv = shlex.split(" ".join(line for line in paragraph.splitlines() if not line.startswith("#")))
        assert argv[:2] == ["vllm", "serve"]
        commands.append(argv[2:])
    return commands


def serve_args(cell: CellCfg) -> list[str]:
    """The model and flags our Docker argv hands to `vllm serve`."""
    model = cell.quant.repo_id if cell.quant.kind == "hub" else cell.model.source.repo_id
    command = server_command(cell, model, cell.serve.port or 8000, container_name="c")
    argv = command.argv
    # The container is run by image id (the preview's placeholder here), then `vllm serve MODEL ...`.
    image_at = next(i for i, part in enumerate(argv) if part.startswith("<id of the image built from spec"))
    start = image_at + 1 + len(cell.image.serve_command)
    return argv[start:]


@pytest.fixture(scope="module")
def parse():
    python = Path(build_image(compose_cell([]).cell.image).location) / "bin" / "python"

    def run(argvs: list[list[str]]) -> list[dict]:
        result = subprocess.run([str(python), str(PROBE)], input=json.dumps(argvs), capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    return run


def differing(ours: dict, theirs: dict) -> set[str]:
    return {key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key)}


def test_config_renders_the_users_second_command_flag_for_flag(parse) -> None:
    cell = compose_cell(["sweep=spark", "quant=ebircak_nvfp4a16_gptq", "drafter=gemma_mtp", "k=7",
                         "serve.host=0.0.0.0", "serve.port=8000"]).cell  # fmt: skip
    theirs, ours = parse([users_commands()[1], serve_args(cell)])
    assert theirs["ok"] and ours["ok"], (theirs["error"], ours["error"])
    assert differing(ours["args"], theirs["args"]) == PINNED
    assert ours["args"]["speculative_config"] == {"method": "mtp", "model": "google/gemma-4-31B-it-assistant",
                                                  "num_speculative_tokens": 7}  # fmt: skip


def test_the_users_first_command_is_one_override_away(parse) -> None:
    cell = compose_cell(["sweep=spark", "serve=spark_autoround", "quant=intel_int4_autoround", "drafter=gemma_mtp",
                         "k=2", "serve.host=0.0.0.0", "serve.port=8080"]).cell  # fmt: skip
    theirs, ours = parse([users_commands()[0], serve_args(cell)])
    assert theirs["ok"] and ours["ok"], (theirs["error"], ours["error"])
    # vLLM rewrites the deprecated method name "gemma4_mtp" to "mtp" (vllm/config/speculative.py); specsweep
    # writes "mtp". The users' command names no served model (vLLM then serves it under the repo id).
    theirs["args"]["speculative_config"]["method"] = "mtp"
    assert differing(ours["args"], theirs["args"]) == PINNED | {"served_model_name"}


def test_vllm_accepts_every_spark_argv_and_rejects_a_bad_one(parse) -> None:
    cells = expand([], "spark") + expand(["serve=spark_autoround"], "spark")
    bad = compose_cell(["sweep=spark", "serve.extra_args=[--max-num-seqz,4]"]).cell
    results = parse([serve_args(cell.config) for cell in cells] + [serve_args(bad)])
    assert [cell.id for cell, result in zip(cells, results) if not result["ok"]] == []
    assert results[-1]["ok"] is False
