"""Reports from real cell records (an earlier embedded sweep) aggregated by the real table code."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from chromium import assert_report_renders
from PIL import Image
from report_inputs import add_quant_axis, make_sweep_dir

from specsweep.advise.advice import advise_sweep_dir
from specsweep.config.compose import ConfigError, compose_cell, config_hash
from specsweep.config.schema import WandbCfg
from specsweep.report import html, markdown
from specsweep.report.data import best_k, load_sweep, summary
from specsweep.report.figures import FIGURES
from specsweep.report.wandb_report import write_spec
from specsweep.report.wandb_runs import log_cell, run_id

WANDB = str(Path(sys.executable).parent / "wandb")


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return make_sweep_dir(tmp_path / "results")


@pytest.fixture
def no_wandb_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """No key anywhere and a W&B server address nothing listens on: nothing can reach the internet."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home/.config/wandb"))
    return dict(os.environ)


def inspect(run_dir: Path) -> dict:
    result = subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(run_dir)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_record(run_dir: Path) -> dict:
    result = subprocess.run([WANDB, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return next(r["run"] for r in records if r.get("type") == "run")


def test_summary_speedup_and_best_k_from_real_records(sweep_dir: Path) -> None:
    data = load_sweep(sweep_dir)
    table = data.table
    frame = summary(table, data.quality).set_index(["drafter", "k"])
    ok = table[table.status == "ok"]

    def tg(cell: str, workload: str) -> float:
        return float(ok[(ok.cell_id == cell) & (ok.workload == workload)].tg_tps_mean.iloc[0])

    ratios = [tg("gemma3_270m-bf16-ngram-k4", w) / tg("gemma3_270m-bf16-none", w) for w in ("code_edit", "free_text")]
    assert frame.loc[("ngram", 4), "speedup_geomean"] == pytest.approx(math.sqrt(ratios[0] * ratios[1]))
    k4 = ok[ok.cell_id == "gemma3_270m-bf16-ngram-k4"]
    assert frame.loc[("ngram", 4), "acceptance_rate"] == pytest.approx(k4.accepted_tokens.sum() / k4.draft_tokens.sum())
    assert frame[["ppl", "kld", "ppl_recovery_pct"]].isna().all(axis=None)  # no quality data: NaN, not 0
    best = best_k(table)
    assert set(best.workload) == {"code_edit", "free_text"}
    for row in best.itertuples():
        drafted = ok[(ok.drafter == "ngram") & (ok.workload == row.workload)]
        assert row.best_k == drafted.loc[drafted.tg_tps_mean.idxmax(), "k"]


def test_markdown_has_summary_and_llama_benchy_tables(sweep_dir: Path) -> None:
    text = markdown.render(load_sweep(sweep_dir))
    assert "| quant | drafter | k | tg t/s | speedup | accept | accept len | PPL | KLD | PPL rec. % |" in text
    assert re.search(r"\| bf16\s+\| ngram\s+\| 4 \|", text)
    for cell in ("gemma3_270m-bf16-ngram-k2", "gemma3_270m-bf16-ngram-k4", "gemma3_270m-bf16-none"):
        assert f"### {cell}" in text
    # The same columns as `specsweep bench --format md` (llama-benchy's, plus acceptance).
    assert "| model | test | t/s | peak t/s | ttfr (ms) | est_ppt (ms) | e2e_ttft (ms) | accept | accept len | errors |" in (
        re.sub(r" +", " ", text)
    )
    assert re.search(r"code_edit tg128 \(c1\) \|\s+12\.11 ± 0\.05", text)
    assert "`gemma3_270m-bf16-suffix-k4`: suffix decoding needs arctic-inference" in text


def test_quality_columns_are_used_when_present(sweep_dir: Path) -> None:
    add_quant_axis(sweep_dir)
    data = load_sweep(sweep_dir)
    assert list(data.quality.quant) == ["bf16", "w4a16"]
    text = markdown.render(data)
    assert re.search(r"\| w4a16\s+\| ngram\s+\| 4 \|.*\| 26\.20 \| 0\.0800 \|\s+84\.0 \|", text)
    frame = summary(data.table, data.quality)
    assert (frame[frame.quant == "w4a16"].speedup_geomean.dropna() > 0).all()


def _figures(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img class="figure"[^>]*src="data:image/png;base64,([^"]+)"', page)]


def test_html_is_self_contained_with_every_figure(sweep_dir: Path) -> None:
    add_quant_axis(sweep_dir)
    page = html.render(load_sweep(sweep_dir))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "report must open offline"
    pngs = _figures(page)
    assert len(pngs) == len(FIGURES) == 7
    for png in pngs:
        image = Image.open(io.BytesIO(png)).convert("L")
        assert image.width > 300 and image.getextrema()[1] - image.getextrema()[0] > 100
    for name in FIGURES:
        assert f'id="fig-{name}"' in page
    assert "<h2>Best k per quant, drafter, workload and concurrency</h2>" in page
    assert "0.32.0" in page and "a5fd3b62230aa5ec" in page  # manifest: vLLM version, model sha256


def test_report_html_renders_in_headless_chromium(sweep_dir: Path, tmp_path: Path) -> None:
    add_quant_axis(sweep_dir)
    path = tmp_path / "report.html"
    path.write_text(html.render(load_sweep(sweep_dir)))
    assert_report_renders(path, tmp_path / "report.png", figures=len(FIGURES))


def test_cli_build_writes_both_and_logs_one_line_per_figure(sweep_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "specsweep.cli", "report", "build", "--sweep-dir", str(sweep_dir)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "report.html").is_file() and (sweep_dir / "tables.md").is_file()
    # Not a terminal (as in a Snakemake job log): plain lines, no redrawn progress bar.
    assert len(re.findall(r"^\[figures\] \d/7 ", result.stderr, re.M)) == 7
    assert "\r" not in result.stderr and "\x1b[" not in result.stderr


def test_report_spec_binds_every_panel_to_the_sweep_group(sweep_dir: Path, no_wandb_network) -> None:
    add_quant_axis(sweep_dir)
    (sweep_dir / "advice.json").write_text(advise_sweep_dir(sweep_dir).model_dump_json())
    spec = write_spec(load_sweep(sweep_dir), WandbCfg(), sweep_dir / "wandb_report.json")
    on_disk = json.loads((sweep_dir / "wandb_report.json").read_text())
    assert on_disk["panels"] == spec["panels"] and on_disk["group"] == "embedded"
    titles = [p["title"] or p["type"] for p in spec["panels"]]
    assert "tg t/s vs k (ngram, one line per quant)" in titles
    assert "speedup over no drafter vs k (ngram)" in titles
    assert "acceptance by draft position (ngram, one line per cell)" in titles
    assert {"perplexity vs tg t/s", "KLD vs tg t/s", "PPL recovery % vs tg t/s"} <= set(titles)
    tg = next(p for p in spec["panels"] if p["title"] == "tg t/s vs k (ngram, one line per quant)")
    assert tg["x"] == "k" and tg["y"] == ["tg_tps_mean"] and "quant" in tg["groupby"]
    for panel in spec["panels"]:
        for runset in panel["runsets"]:
            assert {"key": "group", "op": "=", "value": "embedded"} in runset["filters"]
    # The k-advisor's table, logged by the aggregate run, has its own panel bound to that run.
    (advisor,) = [p for p in spec["panels"] if p["y"] == "k_advisor"]
    assert advisor["type"] == "Weave" and {"key": "jobType", "op": "=", "value": "aggregate"} in advisor["runsets"][0]["filters"]
    assert spec["title"] == "specsweep: embedded"
    assert "ngram" in spec["viewspec"]["description"] and "×" in spec["viewspec"]["description"]


def test_offline_cell_run_has_config_group_metrics_and_stable_id(sweep_dir: Path, no_wandb_network) -> None:
    cell_dir = sweep_dir / "gemma3_270m-bf16-ngram-k4"
    config = yaml.safe_load((cell_dir / "config.yaml").read_text())
    config["serve"]["env"] = {"HF_TOKEN": "hf_secret_value", "VLLM_CPU_KVCACHE_SPACE": "2"}
    (cell_dir / "config.yaml").write_text(yaml.safe_dump(config))
    data = load_sweep(sweep_dir)
    receipt = log_cell(cell_dir, data, WandbCfg(), cell_dir / "wandb.json")
    assert receipt.mode_used == "offline" and receipt.warning is None
    assert receipt.run_id == run_id("embedded", "gemma3_270m-bf16-ngram-k4")
    run_dir = sweep_dir / receipt.run_dir
    assert run_dir.parent == sweep_dir / "wandb"
    shown = inspect(run_dir)
    assert shown["state"] == "finished" and shown["run_id"] == receipt.run_id and shown["project"] == "specsweep"
    assert shown["config"]["specsweep"]["quant"] == "bf16" and shown["config"]["k"] == 4
    assert shown["config"]["drafter"]["name"] == "ngram"
    assert shown["config"]["serve"]["env"]["HF_TOKEN"] == "<redacted>"
    assert "hf_secret_value" not in "".join(p.read_text(errors="ignore") for p in run_dir.rglob("*") if p.is_file())
    rows = data.table[data.table.cell_id == cell_dir.name]
    code = rows[rows.workload == "code_edit"].iloc[0]
    assert shown["summary"]["code_edit_c1/tg_tps_mean"] == pytest.approx(code.tg_tps_mean)
    assert shown["summary"]["status"] == "ok" and shown["summary"]["rows"]["nrows"] == 2
    assert set(shown["tags"]) == {"quant:bf16", "drafter:ngram", "k:4", "status:ok"}
    record = run_record(run_dir)
    assert record["run_group"] == "embedded" and record["job_type"] == "run_cell"


def test_relogging_keeps_run_ids(sweep_dir: Path, no_wandb_network) -> None:
    data = load_sweep(sweep_dir)
    cells = [sweep_dir / c for c in ("gemma3_270m-bf16-ngram-k2", "gemma3_270m-bf16-none")]
    first = {log_cell(c, data, WandbCfg(), c / "wandb.json").run_id for c in cells}
    kept = {log_cell(c, data, WandbCfg(), c / "wandb.json").run_dir for c in cells}
    assert len(kept) == 2 and all((sweep_dir / d).is_dir() for d in kept)
    forced = {log_cell(c, data, WandbCfg(), c / "wandb.json", force=True).run_id for c in cells}
    assert first == forced
    runs = sorted(p.name for p in (sweep_dir / "wandb").glob("offline-run-*"))
    # One directory per run id: a forced re-log replaced its run, an unchanged one was kept.
    assert len(runs) == 2 and {r.split("-", 3)[-1] for r in runs} == first


def wandb_cell_job(cell_dir: Path, *overrides: str) -> list[str]:
    """The wandb_cell rule's job on one cell, with the report config the plan resolves from `overrides`."""
    from specsweep.cli.jobs import job_argv

    report = compose_cell(list(overrides)).report.model_dump_json()
    return [sys.executable, "-m", "specsweep.cli",
            *job_argv("wandb-cell", cell_dir=cell_dir, receipt=cell_dir / "wandb.json", report_config=report)]  # fmt: skip


def test_online_without_key_falls_back_to_offline_with_a_warning(sweep_dir: Path, no_wandb_network) -> None:
    cell_dir = sweep_dir / "gemma3_270m-bf16-none"
    result = subprocess.run(
        wandb_cell_job(cell_dir, "report.wandb.mode=online"),
        capture_output=True, text=True, timeout=300, env=no_wandb_network, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    receipt = json.loads((cell_dir / "wandb.json").read_text())
    assert receipt["mode_requested"] == "online" and receipt["mode_used"] == "offline"
    assert "no API key" in receipt["warning"] and "wandb sync" in receipt["warning"]
    assert result.stderr.count("WARNING") == 1
    assert inspect(sweep_dir / receipt["run_dir"])["state"] == "finished"


def test_disabled_mode_logs_nothing(sweep_dir: Path, no_wandb_network) -> None:
    cell_dir = sweep_dir / "gemma3_270m-bf16-none"
    receipt = log_cell(cell_dir, load_sweep(sweep_dir), WandbCfg(mode="disabled"), cell_dir / "wandb.json")
    assert receipt.mode_used == "disabled" and receipt.run_dir is None
    assert not (sweep_dir / "wandb").exists()


def test_report_config_is_per_sweep_not_per_cell() -> None:
    default, online = compose_cell([]), compose_cell(["report.wandb.mode=online"])
    assert online.report.wandb.mode == "online" and default.report.wandb.mode == "offline"
    assert config_hash(default.cell) == config_hash(online.cell)
    with pytest.raises(ConfigError, match="report.wandb.mode"):
        compose_cell(["report.wandb.mode=sometimes"])


def test_a_key_but_an_unreachable_server_logs_offline_with_one_warning(sweep_dir: Path, no_wandb_network) -> None:
    cell_dir = sweep_dir / "gemma3_270m-bf16-none"
    fake_key = "0123abcd" * 5
    env = {**no_wandb_network, "WANDB_API_KEY": fake_key}  # WANDB_BASE_URL points where nothing listens
    result = subprocess.run(
        wandb_cell_job(cell_dir, "report.wandb.mode=online", "report.wandb.init_timeout_s=15"),
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    receipt = json.loads((cell_dir / "wandb.json").read_text())
    assert receipt["mode_requested"] == "online" and receipt["mode_used"] == "offline", (receipt, result.stderr)
    assert "is not reachable" in receipt["warning"] and "wandb sync" in receipt["warning"]
    assert result.stderr.count("WARNING") == 1, result.stderr
    # Nothing lost: the offline run holds the cell's figures.
    summary = inspect(sweep_dir / receipt["run_dir"])
    assert summary["state"] == "finished"
    assert fake_key not in result.stdout + result.stderr
    assert not [p for p in sweep_dir.rglob("*") if p.is_file() and fake_key.encode() in p.read_bytes()]


def test_a_sweep_whose_every_cell_failed_still_gets_its_reports(tmp_path: Path) -> None:
    sweep_dir = make_sweep_dir(tmp_path, skipped=False)
    for cell in (p for p in sweep_dir.iterdir() if p.is_dir()):
        record = json.loads((cell / "bench.json").read_text())
        record.update(status="failed", error="vLLM exited with code 1 before becoming healthy", workloads=[])
        (cell / "bench.json").write_text(json.dumps(record))
    from specsweep.records.table import build_table

    build_table(sorted(p for p in sweep_dir.iterdir() if p.is_dir())).to_csv(sweep_dir / "table.csv", index=False)
    result = subprocess.run([sys.executable, "-m", "specsweep.cli", "report", "build", "--sweep-dir", str(sweep_dir)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vLLM exited with code 1 before becoming healthy" in (sweep_dir / "tables.md").read_text()


def test_acceptance_by_depth_from_llama_benchy_rows() -> None:
    from specsweep.report.data import SweepData, acceptance_by_depth
    from specsweep.report.figures import acceptance_depth
    from specsweep.report.markdown import depth_table

    def row(workload: str, concurrency: int, drafts: int, pos1: float, pos2: float) -> dict:
        return {"cell_id": "c-ngram-k2", "quant": "bf16", "drafter": "ngram", "drafter_kind": "ngram", "k": 2,
                "status": "ok", "workload": workload, "concurrency": concurrency, "drafts": drafts,
                "acceptance_pos_1": pos1, "acceptance_pos_2": pos2}  # fmt: skip

    table = pd.DataFrame([
        row("pp64_tg32_d0", 1, 10, 0.9, 0.8), row("pp64_tg32_d0", 1, 30, 0.5, 0.4),
        row("pp64_tg32_d4096", 1, 20, 0.6, 0.2), row("pp64_tg32_d4096", 2, 20, 0.0, 0.0), row("code", 1, 5, 1.0, 1.0),
    ])  # fmt: skip
    frame = acceptance_by_depth(table).set_index(["depth", "position"])["acceptance"]
    # Drafts-weighted over the d0 rows; the c2 row and the task workload stay out.
    assert frame.loc[(0, 1)] == pytest.approx((0.9 * 10 + 0.5 * 30) / 40)
    assert frame.loc[(4096, 2)] == pytest.approx(0.2) and len(frame) == 4
    markdown = depth_table(SweepData(sweep="s", table=table, quality=pd.DataFrame()))
    assert "| c-ngram-k2 |  4096 | 0.600 | 0.200 |" in markdown and "| c-ngram-k2 |     0 | 0.600 | 0.500 |" in markdown
    figure = acceptance_depth(SweepData(sweep="s", table=table, quality=pd.DataFrame()))
    assert len(figure.axes[0].lines) == 2


def test_each_row_says_whether_its_cell_thought(tmp_path: Path) -> None:
    """Thinking on or off changes what a cell generates: the table carries the setting of every row."""
    from specsweep.records.table import build_table

    sweep_dir = make_sweep_dir(tmp_path)
    cells = sorted(p for p in sweep_dir.iterdir() if (p / "bench.json").is_file())
    manifest = json.loads((cells[0] / "manifest.json").read_text())
    # These shipped cells predate the manifest's copy of the config (the column is empty for them); a cell of today
    # carries it, as manifest.config.
    manifest["config"] = {"serve": {"default_chat_template_kwargs": {"enable_thinking": True}}}
    (cells[0] / "manifest.json").write_text(json.dumps(manifest))
    table = build_table(cells)
    settings = table.groupby("cell_id")["chat_template_kwargs"].first()
    assert settings[cells[0].name] == '{"enable_thinking":true}'
    assert settings.drop(cells[0].name).isna().all()


def test_a_failed_lm_eval_is_recorded_on_its_cell_and_its_throughput_rows_stand(tmp_path: Path) -> None:
    from specsweep.evals.summary import evals_table
    from specsweep.records.cell import CellRecord
    from specsweep.records.evals import CellEvals, LmEvalRecord
    from specsweep.records.table import build_table

    sweep_dir = make_sweep_dir(tmp_path, skipped=False)
    cells = sorted(p for p in sweep_dir.iterdir() if (p / "bench.json").is_file())
    record = CellRecord.model_validate_json((cells[0] / "bench.json").read_text())
    timed_out = LmEvalRecord(status="failed", error="lm-eval ran past its derived timeout (11844 s); see lm_eval.log",
                             model="local-completions", tasks=["gsm8k"], num_fewshot=5, limit=250, lm_eval_version="0.4.13",
                             wall_s=11844.0)  # fmt: skip
    (cells[0] / "bench.json").write_text(record.model_copy(update={"evals": CellEvals(lm_eval=timed_out)}).model_dump_json())
    evals = evals_table(cells, []).set_index("cell_id")
    assert evals.loc[cells[0].name, "lm_eval_error"].startswith("lm-eval ran past its derived timeout")
    assert evals.drop(cells[0].name)["lm_eval_error"].isna().all()
    rows = build_table(cells, None, evals.reset_index())
    mine = rows[rows["cell_id"] == cells[0].name]
    assert set(mine["status"]) == {"ok"} and len(mine) == len(record.workloads) and mine["tg_tps_mean"].notna().all()


def test_k_and_draft_position_axes_show_whole_numbers_only(sweep_dir: Path) -> None:
    """The sweep has k = 2 and 4 only: matplotlib's default ticks would put 2.5, 3.0, 3.5 on the k axis."""
    import matplotlib.pyplot as plt

    data = load_sweep(sweep_dir)
    checked = 0
    for name in ("tg_vs_k", "acceptance", "speedup", "predictions"):
        fig = FIGURES[name].draw(data)
        try:
            fig.canvas.draw()
            for ax in fig.axes:
                if ax.get_xlabel() in ("k (draft tokens)", "draft position") and ax.has_data():
                    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                    assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)
                    checked += 1
        finally:
            plt.close(fig)
    assert checked >= 3
