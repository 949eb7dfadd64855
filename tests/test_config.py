"""Composition of every option of every group, the typed schema, and bad overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from specsweep.config.compose import ConfigError, cell_yaml, compose_cell, config_hash
from specsweep.paths import conf_dir

GROUPS = ["model", "quant", "drafter", "serve", "image", "bench", "sweep", "quality"]
# Options that only make sense with another choice (a hub quant is a checkpoint of one model, a draft model
# drafts for one model and DFlash at one k, two Sparks need their addresses).
COMPANIONS = {
    (group, option): ["model=gemma4_31b_it"]
    for group, option in [("quant", "intel_int4_autoround"), ("quant", "ebircak_nvfp4a16_gptq"),
                          ("drafter", "gemma_mtp"), ("drafter", "eagle3"), ("drafter", "draft_model")]
} | {
    ("drafter", "dflash"): ["model=gemma4_31b_it", "k=15"],
    ("quant", "nvidia_nvfp4_26b_a4b"): ["model=gemma4_26b_a4b_it"],
    ("drafter", "gemma_mtp_26b_a4b"): ["model=gemma4_26b_a4b_it"],
    ("sweep", "spark_cluster"): ["image.container.cluster.nodes=[192.0.2.10,192.0.2.11]"],
}  # fmt: skip


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    composed = compose_cell([f"{group}={option}", *COMPANIONS.get((group, option), [])])
    assert composed.choices[group] == option
    if group in ("sweep", "quality"):
        assert getattr(composed, group).name == option
    else:
        assert getattr(composed.cell, group).name == option


def test_required_options_exist() -> None:
    assert {"gemma3_270m", "gemma4_31b_it"} <= set(options("model"))
    assert {"none", "ngram", "gemma_mtp", "dflash", "eagle3", "suffix", "draft_model"} <= set(options("drafter"))
    assert {"cpu", "spark"} <= set(options("serve"))


def test_defaults_are_the_embedded_cpu_cell() -> None:
    composed = compose_cell([])
    assert composed.cell.model.name == "gemma3_270m"
    assert composed.cell.serve.name == "cpu"
    assert composed.cell.serve.host == "127.0.0.1"
    assert composed.sweep.name == "embedded"


def test_spark_serve_carries_the_seed_flags() -> None:
    serve = compose_cell(["serve=spark"]).cell.serve
    assert serve.max_model_len == 262144
    assert serve.max_num_seqs == 4
    assert serve.max_num_batched_tokens == 16384
    assert serve.gpu_memory_utilization == 0.85
    assert serve.kv_cache_dtype == "fp8_e4m3"
    assert serve.enable_prefix_caching and serve.enable_chunked_prefill
    assert serve.load_format == "instanttensor"


def test_spark_sweep_switches_model_serve_and_image() -> None:
    cell = compose_cell(["sweep=spark"]).cell
    assert (cell.model.name, cell.serve.name, cell.image.name) == ("gemma4_31b_it", "spark", "spark_vllm_docker")
    # A command-line override still beats the sweep's defaults.
    assert compose_cell(["sweep=spark", "serve=cpu"]).cell.serve.name == "cpu"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("drafter=gemma_mpt", "Available options in 'drafter'"),
        ("k=0", "greater than or equal to 1"),
        ("k=-1", "greater than or equal to 1"),
        ("k=many", "k: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
        ("foo=1", "unknown key 'foo'; valid keys: adaptive_verification, bench, drafter"),
        ("+foo=1", "foo: unknown key"),
        ("serve.max_modl_len=3", "valid keys under serve:"),
        ("+drafter.promt_lookup_max=3", "unknown key"),
        ("drafter=ngram drafter.prompt_lookup_min=0", "greater than or equal to 1"),
    ],
)
def test_bad_overrides_fail_naming_the_fix(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_cell(override.split())
    assert needle in str(caught.value)


def test_bad_drafter_error_lists_every_valid_choice() -> None:
    with pytest.raises(ConfigError) as caught:
        compose_cell(["drafter=gemma_mpt"])
    for option in options("drafter"):
        assert option in str(caught.value)


def test_k_is_not_part_of_a_no_drafter_cell() -> None:
    a, b = compose_cell(["k=2"]).cell, compose_cell(["k=5"]).cell
    assert config_hash(a) == config_hash(b)
    assert "\nk:" not in cell_yaml(a)
    ngram2, ngram5 = compose_cell(["drafter=ngram", "k=2"]).cell, compose_cell(["drafter=ngram", "k=5"]).cell
    assert config_hash(ngram2) != config_hash(ngram5)


def test_prompt_files_of_every_bench_exist(root: Path) -> None:
    for option in options("bench"):
        for workload in compose_cell([f"bench={option}"]).cell.bench.workloads:
            assert (root / workload.prompt_file).is_file(), workload.prompt_file


def test_spark_sweep_runs_the_seed_task_workloads_with_long_context(root: Path) -> None:
    bench = compose_cell(["sweep=spark"]).cell.bench
    names = [w.name for w in bench.workloads]
    assert names == ["qa", "code", "json", "math", "longcode", "longctx", "longctx_32k"]
    assert bench.endpoint == "chat"
    assert all(w.concurrency == [1, 4] for w in bench.workloads[:-1])
    # >= 30k tokens: about 3.7 characters per Gemma token in this text (33.5k tokens measured with Gemma 3's).
    assert len((root / bench.workloads[-1].prompt_file).read_text()) > 30_000 * 3.7
    assert compose_cell(["bench=tasks_cpu"]).cell.bench.workloads[-1].prompt_file.endswith("longctx_cpu.txt")


def test_a_repeated_compose_is_an_independent_copy_and_sees_an_edited_conf(tmp_path: Path, monkeypatch) -> None:
    """compose_raw keeps what it composed for the process (Hydra re-reads every YAML otherwise); a caller changing its
    copy changes nothing for the next, and an edit under conf/ is composed again."""
    from project import make_project

    from specsweep.config.compose import compose_raw

    project = make_project(tmp_path / "p")
    monkeypatch.setenv("SPECSWEEP_ROOT", str(project))
    first, _ = compose_raw(["k=3"])
    first["serve"]["max_num_seqs"] = 99
    again, choices = compose_raw(["k=3"])
    assert again["serve"]["max_num_seqs"] == 4 and again["k"] == 3 and choices["serve"] == "cpu"
    serve = project / "conf/serve/cpu.yaml"
    serve.write_text(serve.read_text().replace("max_num_seqs: 4", "max_num_seqs: 6"))
    assert compose_raw(["k=3"])[0]["serve"]["max_num_seqs"] == 6
