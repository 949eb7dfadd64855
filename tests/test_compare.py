"""`specsweep compare`: cells aligned by config, changes flagged only beyond the run-to-run noise (Welch's t-test,
two-proportion z-test, Holm), on real cell records (tests/data/embedded_v0)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from report_inputs import make_sweep_dir

from specsweep.records.cell import CellRecord
from specsweep.report.compare import compare, html_page, markdown


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return make_sweep_dir(tmp_path / "a", skipped=False)


def _edit(sweep_dir: Path, cell: str, change) -> None:
    path = sweep_dir / cell / "bench.json"
    record = CellRecord.model_validate_json(path.read_text())
    change(record)
    path.write_text(record.model_dump_json())


def _scale_tg(record: CellRecord, factor: float, reverse: bool = False) -> None:
    for workload in record.workloads:
        metric = workload.row.tg_throughput
        values = reversed(metric.values) if reverse else metric.values
        metric.values = [v * factor for v in values]
        metric.mean *= factor


def test_a_sweep_against_itself_flags_nothing(sweep: Path):
    comparison = compare(sweep, sweep)
    assert comparison.changes and not comparison.flagged and not comparison.only_in_a and not comparison.only_in_b
    assert all(c.change_pct == 0 and c.cell_a == c.cell_b for c in comparison.changes)
    assert {c.metric for c in comparison.changes} == {"tg_tps", "pp_tps", "ttfr_ms", "acceptance_rate"}


def test_a_slower_image_is_flagged_and_the_image_difference_named(sweep: Path, tmp_path: Path):
    other = tmp_path / "b" / "embedded"
    shutil.copytree(sweep, other)
    cell = "gemma3_270m-bf16-ngram-k4"
    # Another image: B's config differs only there, and its generation is 20 % slower run by run.
    config = yaml.safe_load((other / cell / "config.yaml").read_text())
    config["image"]["name"] = "another_image"
    (other / cell / "config.yaml").write_text(yaml.safe_dump(config))

    _edit(other, cell, lambda record: _scale_tg(record, 0.8))
    comparison = compare(sweep, other)
    flagged = comparison.flagged
    assert flagged and {(c.cell_a, c.metric) for c in flagged} == {(cell, "tg_tps")}
    assert all(c.change_pct == pytest.approx(-20) and c.better is False for c in flagged)
    assert comparison.differences == {f"{cell} | {cell}": ["image.name: 'vllm_cpu' -> 'another_image'"]}
    text = markdown(comparison)
    assert "## Changes beyond the noise" in text and "worse" in text
    assert html_page(comparison).count('class="flagged"') == len(flagged)


def test_a_change_inside_the_noise_is_not_flagged(sweep: Path, tmp_path: Path):
    other = tmp_path / "b" / "embedded"
    shutil.copytree(sweep, other)
    cell = "gemma3_270m-bf16-ngram-k4"

    # The same two runs' values, swapped in order and nudged by 0.1 %: no change a test could see.
    _edit(other, cell, lambda record: _scale_tg(record, 1.001, reverse=True))
    assert not compare(sweep, other).flagged


def test_acceptance_counts_are_compared_with_a_proportion_test(sweep: Path, tmp_path: Path):
    other = tmp_path / "b" / "embedded"
    shutil.copytree(sweep, other)
    cell = "gemma3_270m-bf16-ngram-k4"

    def fewer_accepted(record: CellRecord) -> None:
        for workload in record.workloads:
            spec = workload.row.acceptance
            spec.accepted = spec.accepted // 2

    _edit(other, cell, fewer_accepted)
    flagged = compare(sweep, other).flagged
    assert {c.metric for c in flagged} == {"acceptance_rate"} and all(c.better is False for c in flagged)


def test_pairing_two_options_aligns_their_cells(sweep: Path, tmp_path: Path):
    # B: the same cells under another quant's name: only --pair aligns A's bf16 cells with B's w4a16_gptq ones.
    other = tmp_path / "b" / "embedded"
    shutil.copytree(sweep, other)
    for directory in other.iterdir():
        path = directory / "config.yaml"
        if path.is_file():
            config = yaml.safe_load(path.read_text())
            config["quant"] = {"name": "w4a16_gptq", "kind": "llmcompressor", "scheme": "W4A16", "group_size": 128}
            path.write_text(yaml.safe_dump(config))
    assert compare(sweep, other).only_in_a  # not aligned without the pairing
    paired = compare(sweep, other, pair=("quant", "bf16", "w4a16_gptq"))
    assert not paired.only_in_a and not paired.only_in_b and "quant" in paired.ignored


def test_cli_writes_markdown_and_html(sweep: Path, tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "specsweep.cli", "compare", str(sweep), str(sweep),
                             "--markdown", str(tmp_path / "c.md"), "--html", str(tmp_path / "c.html")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "0 of" in result.stderr and (tmp_path / "c.md").read_text().startswith("# specsweep compare")
    assert "<table>" in (tmp_path / "c.html").read_text()
    bad = subprocess.run([sys.executable, "-m", "specsweep.cli", "compare", str(sweep), str(tmp_path / "empty"),
                          "--pair", "quant"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "GROUP=A_VALUE,B_VALUE" in bad.stderr
