"""End to end on CPU: the embedded sweep through Snakemake with real vLLM serving the packaged model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from project import cell_processes, snakemake_e2e

from specsweep.envs import sha256_file
from specsweep.records.host import read_cpu_facts

pytestmark = pytest.mark.slow

SERVED_QUANTS = ["bf16", "int4_autoround_fast", "w4a16_gptq"]
SWEEP_CELLS = [
    "gemma3_270m-bf16-ngram-k2",
    "gemma3_270m-bf16-ngram-k4",
    "gemma3_270m-bf16-none",
    "gemma3_270m-int4_autoround_fast-ngram-k4",
    "gemma3_270m-int4_autoround_fast-none",
    "gemma3_270m-nvfp4a16-ngram-k4",
    "gemma3_270m-nvfp4a16-none",
    "gemma3_270m-w4a16_gptq-ngram-k4",
    "gemma3_270m-w4a16_gptq-none",
]


@pytest.fixture(scope="module")
def table(swept: Path) -> pd.DataFrame:
    return pd.read_csv(swept / "results/embedded/table.csv")


@pytest.fixture(scope="module")
def served(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.status == "ok"]


def bench(project: Path, cell: str) -> dict:
    return json.loads((project / "results/embedded" / cell / "bench.json").read_text())


def test_every_cell_wrote_its_records(swept: Path) -> None:
    for cell in SWEEP_CELLS:
        cell_dir = swept / "results/embedded" / cell
        for name in ("bench.json", "manifest.json", "config.yaml", "server.log"):
            assert (cell_dir / name).is_file(), cell_dir / name
        log = (cell_dir / "server.log").read_text()
        if json.loads((cell_dir / "bench.json").read_text())["status"] == "skipped":
            assert log.startswith("not started: "), log[:200]
        else:
            assert "Starting vLLM server on http://127.0.0.1" in log, cell
    # The parquet table holds what the CSV holds, cell for cell.
    csv = pd.read_csv(swept / "results/embedded/table.csv")
    parquet = pd.read_parquet(swept / "results/embedded/table.parquet")
    assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv) > 0
    for column in csv.columns:
        if pd.api.types.is_numeric_dtype(csv[column]) and pd.api.types.is_numeric_dtype(parquet[column]):
            assert np.allclose(csv[column].astype(float), parquet[column].astype(float), equal_nan=True), column
        else:
            as_text = [side[column].astype(object).where(side[column].notna(), "").astype(str) for side in (csv, parquet)]
            assert as_text[0].tolist() == as_text[1].tolist(), column


def test_ngram_cells_draft_and_accept(served: pd.DataFrame) -> None:
    ngram = served[served.drafter == "ngram"]
    assert set(ngram.k) == {2, 4}
    assert sorted(set(ngram.quant)) == SERVED_QUANTS
    assert (ngram.drafts > 0).all()
    assert ((ngram.acceptance_rate > 0) & (ngram.acceptance_rate <= 1)).all()
    assert (ngram.mean_acceptance_length >= 1).all()
    assert (ngram.status == "ok").all()
    k4 = ngram[ngram.k == 4]
    for position in range(1, 5):
        assert k4[f"acceptance_pos_{position}"].between(0, 1).all()
    # ngram at k=2 never drafts a third token.
    k2 = ngram[ngram.k == 2]
    assert k2["acceptance_pos_3"].isna().all() or (k2["acceptance_pos_3"] == 0).all()


def test_none_cells_draft_nothing(served: pd.DataFrame) -> None:
    none = served[served.drafter == "none"]
    # Per served quant: code_edit at c1 and c2, free_text at c1; not repeated per k.
    assert len(none) == 3 * len(SERVED_QUANTS)
    assert (none.drafts == 0).all() and none.acceptance_rate.isna().all() and none.k.isna().all()


def test_tokens_counted_from_token_ids_and_rates_present(served: pd.DataFrame) -> None:
    assert (served.token_source == "token_ids").all()
    assert (served.n_failed == 0).all()
    assert (served.tg_tps_mean > 0).all() and (served.pp_tps_mean > 0).all() and (served.ttfr_ms_mean > 0).all()
    concurrent = served[served.concurrency == 2]
    # One run of 2 concurrent requests per cell (E2E_OVERRIDES: bench.runs=1).
    assert len(concurrent) == 7 and (concurrent.n_requests == 2).all()
    assert served.vllm_version.str.startswith("0.32").all()
    assert served.git_sha.isna().all() or served.git_sha.str.len().eq(40).all()


def test_greedy_outputs_identical_with_and_without_drafter(swept: Path) -> None:
    def outputs(cell: str) -> dict[str, list[list[int]]]:
        # Sequential requests only: a batch of two may round differently from a batch of one.
        workloads = bench(swept, cell)["workloads"]
        return {w["workload"]: [r["token_ids"] for r in w["requests"]] for w in workloads if w["concurrency"] == 1}

    pairs = [("gemma3_270m-bf16-none", "gemma3_270m-bf16-ngram-k2")] + [
        (f"gemma3_270m-{quant}-none", f"gemma3_270m-{quant}-ngram-k4") for quant in SERVED_QUANTS
    ]
    for plain_cell, drafted_cell in pairs:
        plain, drafted = outputs(plain_cell), outputs(drafted_cell)
        assert drafted.keys() == plain.keys() and plain
        # Equal over real tokens: two empty lists would be equal too.
        assert all(ids for requests in plain.values() for ids in requests), f"{plain_cell} generated nothing"
        for workload in plain:
            assert drafted[workload] == plain[workload], f"{drafted_cell} {workload} differs from {plain_cell}"


def test_nvfp4_cells_are_skipped_with_the_reason_but_quantized_and_evaluated(swept: Path, table: pd.DataFrame) -> None:
    nvfp4 = table[table.quant == "nvfp4a16"]
    assert len(nvfp4) == 2 and (nvfp4.status == "skipped").all()
    assert nvfp4.skip_reason.str.contains("no CPU kernel for NVFP4").all()
    assert nvfp4.ppl.notna().all() and nvfp4.kld.gt(0).all()


def test_quality_per_quant(swept: Path, table: pd.DataFrame) -> None:
    quality = pd.read_csv(swept / "results/embedded/quality.csv").set_index("quant")
    assert sorted(quality.index) == ["bf16", "int4_autoround_fast", "nvfp4a16", "w4a16_gptq"]
    assert (quality.status == "ok").all() and (quality.method == "in_process_full_distribution").all()
    # The base against a second, separately loaded copy of itself: the same weights give the same distributions.
    assert abs(quality.loc["bf16", "kld"]) < 1e-9 and quality.loc["bf16", "ppl_recovery_pct"] == pytest.approx(100)
    for quant in ("int4_autoround_fast", "nvfp4a16", "w4a16_gptq"):
        assert quality.loc[quant, "kld"] > 0
        # 4-bit weights of a 270M model cost quality: every quant's PPL is above the base's (measured: +15 % to +72 %).
        assert quality.loc[quant, "ppl"] > quality.loc["bf16", "ppl"]
    # Every row of a quant carries its quality next to its throughput.
    for quant, rows in table.groupby("quant"):
        assert (rows.ppl == quality.loc[quant, "ppl"]).all()


def test_served_quant_checkpoints_match_their_manifests(swept: Path, served: pd.DataFrame) -> None:
    for quant in ("int4_autoround_fast", "w4a16_gptq"):
        manifest = json.loads((swept / f"results/embedded/gemma3_270m-{quant}-none/manifest.json").read_text())
        location = Path(manifest["quant_location"])
        assert manifest["quant_files_sha256"]
        for name, digest in manifest["quant_files_sha256"].items():
            assert sha256_file(location / name) == digest
        argv = manifest["server_argv"]
        assert argv[argv.index("--model") + 1] == str(location)
    quantized = served[served.quant != "bf16"]
    assert quantized.quant_kernel.isin(["CPUWNA16LinearKernel", "DequantWNA16FallbackKernel"]).all()
    # The kernel vLLM logged is the one this host's facts selected (the plugin engaged exactly when chosen).
    assert (quantized.quant_kernel == quantized.wna16_kernel_selected).all()


# What each host kind gets, written out (not computed by the code under test): vLLM's extension build, whether it
# has the native int4 GEMM, and the W4A16 kernel in float32 (`auto`) and in bfloat16.
HOST_TABLE = {
    "avx2": ("_C_AVX2", False, "DequantWNA16FallbackKernel", "DequantWNA16FallbackKernel"),
    "avx512": ("_C_AVX512", True, "DequantWNA16FallbackKernel", "CPUWNA16LinearKernel"),
    "avx512_bf16": ("_C", True, "DequantWNA16FallbackKernel", "CPUWNA16LinearKernel"),
}


def test_dtype_and_kernel_follow_this_hosts_cpu(swept: Path, table: pd.DataFrame) -> None:
    cpu = read_cpu_facts()
    extension, native, fp32_kernel, _ = HOST_TABLE[cpu.isa]
    (receipt,) = (swept / "results/_images").glob("vllm_cpu-*.json")
    image = json.loads(receipt.read_text())
    assert (image["cpu_extension"], image["native_wna16_op"]) == (extension, native), cpu.model
    # `auto` is float32 on every host (drafted == plain greedy); the int4 GEMM has no float32 case.
    assert set(table["dtype"]) == {"float32"} and set(table.cpu_isa) == {cpu.isa}
    w4 = table[table.quant_scheme == "W4A16"]
    assert set(w4.wna16_kernel_selected) == {fp32_kernel} and set(w4[w4.status == "ok"].quant_kernel) == {fp32_kernel}
    manifest = json.loads((swept / "results/embedded/gemma3_270m-w4a16_gptq-none/manifest.json").read_text())
    assert manifest["host_cpu"]["flags"] == cpu.flags and manifest["serving"]["dtype"] == "float32"
    assert "SPECSWEEP_WNA16_FALLBACK" in manifest["server_env"]
    argv = manifest["server_argv"]
    assert argv[argv.index("--dtype") + 1] == "float32"


def test_bf16_w4a16_is_served_by_this_hosts_kernel(swept: Path, tmp_path: Path) -> None:
    """The W4A16 cell in bfloat16, served for real: vLLM's own int4 GEMM on an AVX-512 host (its figures recorded),
    the dequantizing fallback on an AVX2 host."""
    from specsweep.cell import run_cell
    from specsweep.config.grid import expand
    from specsweep.records.image import ImageRecord
    from specsweep.records.model import ModelRecord
    from specsweep.records.quant import QuantRecord

    _, _, _, bf16_kernel = HOST_TABLE[read_cpu_facts().isa]
    (cell,) = expand(["quant=w4a16_gptq", "drafter=none", "model.dtype=bfloat16", "eval=none", "bench.runs=1",
                      "bench.workloads=[{name:probe,prompt_file:data/prompts/free_text.txt,max_tokens:32}]"])  # fmt: skip
    results = swept / "results"
    model = ModelRecord.model_validate_json(next(results.glob("_models/*.json")).read_text())
    quant = QuantRecord.model_validate_json(next(results.glob("_quants/gemma3_270m-w4a16_gptq-*.json")).read_text())
    image = ImageRecord.model_validate_json(next(results.glob("_images/vllm_cpu-*.json")).read_text())
    record = run_cell(cell, tmp_path, model, quant, image, tmp_path / "server.log")
    assert record.status == "ok", record.error
    assert (record.dtype, record.wna16_kernel_selected, record.quant_kernel) == ("bfloat16", bf16_kernel, bf16_kernel)
    (workload,) = record.workloads
    assert workload.row.tg_throughput.mean > 0 and sum(r.completion_tokens for r in workload.requests) > 0
    print(f"[bf16 W4A16 on {read_cpu_facts().model}] {bf16_kernel}: tg {workload.row.tg_throughput.mean:.1f} t/s")


def test_the_server_runs_with_tcmalloc_and_intel_openmp_preloaded(swept: Path) -> None:
    manifest = json.loads((swept / "results/embedded/gemma3_270m-bf16-ngram-k4/manifest.json").read_text())
    preload = manifest["server_env"]["LD_PRELOAD"].split(":")
    assert [Path(p).name for p in preload] == ["libtcmalloc_minimal.so.4", "libiomp5.so"]
    assert all(Path(p).is_file() for p in preload)
    log = (swept / "results/embedded/gemma3_270m-bf16-ngram-k4/server.log").read_text()
    assert "Starting vLLM server on http://127.0.0.1" in log
    assert "not found in LD_PRELOAD" not in log
    assert "without Intel OpenMP in LD_PRELOAD" not in log


def test_manifest_records_what_produced_the_numbers(swept: Path) -> None:
    manifest = json.loads((swept / "results/embedded/gemma3_270m-bf16-ngram-k4/manifest.json").read_text())
    assert manifest["vllm_version"].startswith("0.32")
    assert len(manifest["model_source_sha256"]) == 64
    assert all(len(digest) == 64 for digest in manifest["model_weights_sha256"].values())
    argv = manifest["server_argv"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert json.loads(argv[argv.index("--speculative-config") + 1])["num_speculative_tokens"] == 4
    # Versioned, and standing alone: the resolved config it hashed, the git state (None here: the test project is a
    # copy, not a checkout), the GPU facts (none here).
    assert manifest["schema_version"] == 2 and manifest["config"]["k"] == 4
    assert manifest["config"] == yaml.safe_load((swept / "results/embedded/gemma3_270m-bf16-ngram-k4/config.yaml").read_text())
    assert {"git_sha", "git_dirty", "gpu", "hardware", "host_cpu"} <= set(manifest)
    gptq = json.loads((swept / "results/embedded/gemma3_270m-w4a16_gptq-none/manifest.json").read_text())
    assert len(gptq["quant_calibration_sha256"]) == 64


def test_no_server_outlives_the_sweep(swept: Path) -> None:
    assert cell_processes(swept) == []


def test_noop_rerun_does_nothing(swept: Path) -> None:
    result = snakemake_e2e(swept, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_narrowed_run_after_the_full_sweep_keeps_every_measured_cell(swept: Path, tmp_path: Path) -> None:
    """A narrowed run on a copy of the swept project (its records and Snakemake's metadata, so nothing is measured
    again): its table, evals and quality tables are the full run's, cell for cell, with the one cell it planned marked
    as this run's; before, they held that one cell only."""
    project = tmp_path / "narrowed"
    shutil.copytree(swept, project, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    narrowed_cell = "gemma3_270m-w4a16_gptq-ngram-k4"
    result = snakemake_e2e(project, overrides="quant=w4a16_gptq drafter=ngram k=4")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "rule run_cell:" not in output and "rule aggregate:" in output
    full_dir, narrowed_dir = swept / "results/embedded", project / "results/embedded"
    full, narrowed = pd.read_csv(full_dir / "table.csv"), pd.read_csv(narrowed_dir / "table.csv")
    assert full["this_run"].all()
    cells = narrowed.drop_duplicates("cell_id").set_index("cell_id")["this_run"]
    assert cells[cells].index.tolist() == [narrowed_cell] and len(cells) == 9
    # Every figure, the quality columns of the quants this run did not plan among them, as the full run wrote it.
    pd.testing.assert_frame_equal(narrowed.drop(columns="this_run"), full.drop(columns="this_run"))
    for name in ("quality.csv", "evals.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(narrowed_dir / name), pd.read_csv(full_dir / name))
    kept = "1 of the 9 cells measured by the latest run; the other 8 kept from earlier runs of this sweep"
    assert kept in (narrowed_dir / "report.html").read_text() and kept in (narrowed_dir / "tables.md").read_text()
    assert kept not in (full_dir / "tables.md").read_text()


def test_editing_one_drafter_reruns_only_its_cells(swept: Path, tmp_path: Path) -> None:
    drafter_yaml = swept / "conf/drafter/ngram.yaml"
    original = drafter_yaml.read_text()
    try:
        drafter_yaml.write_text(original.replace("prompt_lookup_max: 4", "prompt_lookup_max: 3"))
        result = snakemake_e2e(swept, "-n")
    finally:
        drafter_yaml.write_text(original)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Only cell jobs: the report jobs downstream of the table rerun for every cell, as they should.
    rerun_cells = sorted(set(re.findall(r"rule run_cell:\n(?:    .*\n)*?    wildcards: sweep=embedded, cell=([\w.-]+)", output)))
    assert rerun_cells == [
        "gemma3_270m-bf16-ngram-k2",
        "gemma3_270m-bf16-ngram-k4",
        "gemma3_270m-int4_autoround_fast-ngram-k4",
        "gemma3_270m-nvfp4a16-ngram-k4",
        "gemma3_270m-w4a16_gptq-ngram-k4",
    ]
    assert "rule prepare_model:" not in output and "rule build_image:" not in output
    assert "rule quantize:" not in output and "rule quant_quality:" not in output


def test_editing_one_quant_recipe_reruns_that_quant_and_its_cells(swept: Path) -> None:
    quant_yaml = swept / "conf/quant/w4a16_gptq.yaml"
    original = quant_yaml.read_text()
    try:
        quant_yaml.write_text(original.replace("dampening_frac: 0.01", "dampening_frac: 0.02"))
        result = snakemake_e2e(swept, "-n")
    finally:
        quant_yaml.write_text(original)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    rerun_cells = sorted(set(re.findall(r"rule run_cell:\n(?:    .*\n)*?    wildcards: sweep=embedded, cell=([\w.-]+)", output)))
    assert rerun_cells == ["gemma3_270m-w4a16_gptq-ngram-k4", "gemma3_270m-w4a16_gptq-none"]
    quantized = re.findall(r"rule quantize:\n(?:    .*\n)*?    wildcards: key=([\w.-]+)", output)
    assert len(quantized) == 1 and quantized[0].startswith("gemma3_270m-w4a16_gptq-")
    assert len(re.findall(r"rule quant_quality:", output)) == 1
    assert "rule prepare_model:" not in output and "rule build_image:" not in output


def test_memory_is_recorded_for_every_served_cell(served: pd.DataFrame) -> None:
    cells = served.drop_duplicates("cell_id")
    assert len(cells) == 7  # bf16 none/ngram k2/k4, and none/ngram k4 of each of the two served int4 quants
    for row in cells.itertuples():
        # Weight files on disk, vLLM's KV cache (memory and tokens, as its log says), and the sampled peak.
        assert 0.1 < row.mem_weights_gib < 2, row.cell_id
        assert row.mem_kv_cache_gib > 0 and row.kv_cache_tokens > 1000 and row.max_model_len > 0, row.cell_id
        assert row.mem_peak_rss_gib > row.mem_weights_gib and 0 < row.mem_pss_at_end_gib <= row.mem_peak_rss_gib, row.cell_id


def test_compare_finds_a_known_shift_and_pairs_bf16_with_w4a16(swept: Path, tmp_path: Path) -> None:
    import shutil

    from specsweep.records.cell import CellRecord
    from specsweep.report.compare import compare

    sweep_dir = swept / "results/embedded"
    # A copy of the sweep whose one cell generated 20 % slower: compare must put the change there and nowhere else.
    other = tmp_path / "b/embedded"
    shutil.copytree(sweep_dir, other)
    cell = "gemma3_270m-bf16-ngram-k4"
    record = CellRecord.model_validate_json((other / cell / "bench.json").read_text())
    for workload in record.workloads:
        metric = workload.row.tg_throughput
        metric.values, metric.mean = [v * 0.8 for v in metric.values], metric.mean * 0.8
    (other / cell / "bench.json").write_text(record.model_dump_json())
    shifted = compare(sweep_dir, other)
    moved = {(c.cell_a, c.metric) for c in shifted.changes if c.change_pct != 0}
    assert moved == {(cell, "tg_tps")}, moved
    assert all(c.change_pct == pytest.approx(-20) for c in shifted.changes if c.cell_a == cell and c.metric == "tg_tps")
    paired = compare(sweep_dir, sweep_dir, pair=("quant", "bf16", "w4a16_gptq"))
    # Each w4a16_gptq cell is paired with its bf16 counterpart (bf16 alone has ngram k=2); they differ in the quant only.
    assert paired.only_in_a == ["gemma3_270m-bf16-ngram-k2"] and not paired.only_in_b
    assert {c.cell_b for c in paired.changes} == {"gemma3_270m-w4a16_gptq-ngram-k4", "gemma3_270m-w4a16_gptq-none"}
    assert all(all(line.startswith("quant.") for line in diff) for diff in paired.differences.values())

