"""What a new user meets first: help without arguments, the version, and one or two lines naming the fix (never a
traceback) for input one edit away from a valid choice, results that do not exist yet, or keys that no cell has."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from report_inputs import make_sweep_dir

from specsweep import __version__
from specsweep.cli import main


@pytest.fixture
def specsweep(capsys):
    """`specsweep ARGS` in this process (the same main() the console script runs): (exit code, stdout, stderr)."""
    previous = signal.getsignal(signal.SIGTERM)

    def run(*args: str) -> tuple[int, str, str]:
        said = ""
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            # SystemExit("message"): the interpreter prints the message to stderr and exits 1.
            code, said = (stop.code, "") if isinstance(stop.code, int) or stop.code is None else (1, f"{stop.code}\n")
        finally:
            signal.signal(signal.SIGTERM, previous)
        out, err = capsys.readouterr()
        return code or 0, out, err + said

    return run


def test_specsweep_alone_prints_help_and_version_says_which() -> None:
    alone = subprocess.run([sys.executable, "-m", "specsweep.cli"], capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0 and "usage: specsweep" in alone.stdout
    assert all(command in alone.stdout for command in ("config", "cells", "run", "bench", "compare", "report"))
    assert "job" not in re.findall(r"^\s{4}(\w[\w-]*)", alone.stdout, re.M)  # Snakemake's entry points stay hidden
    version = subprocess.run([sys.executable, "-m", "specsweep.cli", "--version"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert version.returncode == 0 and version.stdout.strip() == f"specsweep {__version__}"


@pytest.mark.parametrize(
    "args,says",
    [
        (["config", "drafter=gemma_mpt"], "drafter=gemma_mpt is no option of drafter (did you mean drafter=gemma_mtp?)"),
        (["config", "quant=nvfp4"], "(did you mean quant=nvfp4a16 or quant=nvfp4a16_gptq?)"),
        (["config", "serve.max_num_sqs=2"], "unknown key 'serve.max_num_sqs' (did you mean serve.max_num_seqs?)"),
        (["config", "k=2,4"], "`specsweep config` shows one cell; to see every cell several values make, use `specsweep cells`"),
    ],
)
def test_a_bad_override_says_what_was_meant(specsweep, args: list[str], says: str) -> None:
    code, _, err = specsweep(*args)
    assert code == 2 and says in err and "Traceback" not in err
    assert err.startswith("specsweep: config error: ")


def test_config_takes_the_sweep_as_cells_and_run_do(specsweep) -> None:
    code, out, err = specsweep("config", "--sweep", "spark", "drafter=gemma_mtp", "k=7")
    assert code == 0, err
    assert '"method":"mtp"' in out.replace(" ", "") and "gemma4_31b_it" in out


def test_results_that_do_not_exist_yet_are_named_with_the_fix(specsweep, tmp_path: Path) -> None:
    missing, empty = tmp_path / "results/embedded", tmp_path / "empty"
    empty.mkdir()
    for args, says in [
        (["report", "build", "--sweep-dir", str(missing)], f"{missing} does not exist: run the sweep first"),
        (["advise", "--sweep-dir", str(empty)], f"{empty} has no table.csv: run the sweep first"),
        (["compare", str(missing), str(empty)], f"{missing} does not exist; give the results dir of a sweep that ran"),
    ]:
        code, _, err = specsweep(*args)
        assert code == 1 and says in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1


def test_compare_refuses_keys_no_cell_has_and_says_what_was_meant(specsweep, tmp_path: Path) -> None:
    sweep = make_sweep_dir(tmp_path / "results")
    code, _, err = specsweep("compare", str(sweep), str(sweep), "--ignore", "serve.max_num_sqs")
    assert code == 1 and "--ignore serve.max_num_sqs: no cell of either sweep has that config key" in err
    assert "(did you mean serve.max_num_seqs?)" in err and "Traceback" not in err
    code, _, err = specsweep("compare", str(sweep), str(sweep), "--pair", "quantt=bf16,bf16")
    assert code == 1 and "--pair quantt: no cell of either sweep has that config key (did you mean quant?)" in err
    # A key the cells have is taken (the comparison runs; the sweep against itself changes nothing).
    code, out, err = specsweep("compare", str(sweep), str(sweep), "--ignore", "serve.max_num_seqs")
    assert code == 0, err


def test_cells_and_config_mark_what_this_host_will_skip(specsweep) -> None:
    code, out, err = specsweep("cells")
    assert code == 0, err
    lines = out.strip().splitlines()
    skipped = [line.split("\t")[0] for line in lines if "\t(skipped here: " in line]
    # NVFP4 has no CPU kernel: its two cells are quantized and evaluated, never served; every other cell runs.
    assert skipped == ["embedded/gemma3_270m-nvfp4a16-ngram-k4", "embedded/gemma3_270m-nvfp4a16-none"]
    assert "vLLM has no CPU kernel for NVFP4 weights" in next(line for line in lines if "nvfp4a16-none" in line)
    assert len(lines) == 9
    code, out, _ = specsweep("config", "quant=nvfp4a16")
    assert code == 0 and "# skipped on this host (recorded as skipped, never served): quant nvfp4a16 (NVFP4A16)" in out
    code, out, _ = specsweep("config", "quant=w4a16_gptq")
    assert code == 0 and "skipped on this host" not in out


def test_a_yaml_syntax_error_in_conf_is_one_line_naming_the_file_line_and_column(specsweep, tmp_path: Path,
                                                                                 monkeypatch) -> None:  # fmt: skip
    from project import make_project

    project = make_project(tmp_path / "p")
    serve = project / "conf/serve/cpu.yaml"
    lines = serve.read_text().count("\n")
    serve.write_text(serve.read_text() + "max_num_seqs: [4\n")
    monkeypatch.setenv("SPECSWEEP_ROOT", str(project))
    code, _, err = specsweep("config")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("specsweep: config error: a file under conf/ is not valid YAML: while parsing a flow sequence")
    assert f'in "{serve}", line {lines + 1}, column 15' in err


def test_publishing_without_the_server_a_key_or_an_entity_says_which(specsweep, tmp_path: Path, monkeypatch) -> None:
    from specsweep.config.schema import WandbCfg
    from specsweep.report.data import load_sweep
    from specsweep.report.wandb_report import write_spec

    sweep = make_sweep_dir(tmp_path / "results")
    write_spec(load_sweep(sweep), WandbCfg(), sweep / "wandb_report.json")
    # No key anywhere, and a W&B server address nothing listens on: nothing can reach the internet.
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home/.config/wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    code, _, err = specsweep("report", "publish", "--sweep-dir", str(sweep))
    assert code == 1 and "WANDB_MODE=offline: publishing a report needs the W&B server; unset WANDB_MODE" in err
    monkeypatch.delenv("WANDB_MODE")
    code, _, err = specsweep("report", "publish", "--sweep-dir", str(sweep))
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "run `wandb login` (or export WANDB_API_KEY)" in err, err


def test_wandb_follows_its_own_variables_and_prints_paths_to_paste(tmp_path: Path, monkeypatch) -> None:
    from specsweep.config.schema import WandbCfg
    from specsweep.report.data import load_sweep
    from specsweep.report.notice import report_notice
    from specsweep.report.wandb_runs import log_cell, with_wandb_env

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for variable in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(variable, raising=False)
    assert with_wandb_env(WandbCfg()) == WandbCfg()
    monkeypatch.setenv("WANDB_PROJECT", "theirs")
    monkeypatch.setenv("WANDB_ENTITY", "team")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert with_wandb_env(WandbCfg()) == WandbCfg(mode="disabled", project="theirs", entity="team")
    # WANDB_MODE=disabled: nothing is logged, not even offline (the config says offline).
    sweep = make_sweep_dir(tmp_path / "results")
    cell = sweep / "gemma3_270m-bf16-none"
    receipt = log_cell(cell, load_sweep(sweep), WandbCfg(mode="offline"), cell / "wandb.json")
    assert receipt.mode_used == "disabled" and receipt.run_dir is None and not (sweep / "wandb").exists()
    # An offline run's sync hint is an absolute path, whatever the shell's directory.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    log_cell(cell, load_sweep(Path("results/embedded")), WandbCfg(), cell / "wandb.json")
    assert f"wandb sync {sweep.resolve()}/wandb/offline-run-*" in report_notice("results/embedded")


def test_report_commands_take_report_overrides_only(specsweep, tmp_path: Path) -> None:
    """`report build` and `report wandb` read a measured table: a cell override there would be silently ignored."""
    sweep = make_sweep_dir(tmp_path / "results")
    for action in ("build", "wandb"):
        code, _, err = specsweep("report", action, "--sweep-dir", str(sweep), "report.html.dpi=60", "drafter=ngram", "k=3")
        assert code == 1 and "Traceback" not in err, err
        assert "only report.* overrides apply to a measured table, not drafter=ngram k=3" in err
        code, out, _ = specsweep("report", action, "--help")
        assert "report.* overrides only" in out and "drafter=ngram" not in out


def test_bench_says_the_tokenizer_is_required_before_anything_runs(specsweep) -> None:
    code, _, err = specsweep("bench", "--base-url", "http://127.0.0.1:9/v1")
    assert code == 2 and "the following arguments are required: --tokenizer" in err and "Traceback" not in err
    code, out, _ = specsweep("bench", "--help")
    assert "--tokenizer TOKENIZER" in out and "[--tokenizer" not in out  # shown as required, not optional


def test_the_console_shows_each_cell_as_it_starts_and_ends_with_what_is_left(tmp_path: Path, capsys) -> None:
    from specsweep.cell_progress import begin, cell_progress

    sweep = make_sweep_dir(tmp_path / "results")
    state = tmp_path / "progress.json"
    begin(3, state)
    ok, skipped = sweep / "gemma3_270m-bf16-ngram-k4", next(p for p in sweep.iterdir() if "suffix" in p.name)
    with cell_progress(ok.name, str(ok / "bench.json"), "ok.log", state):
        pass
    with cell_progress(skipped.name, str(skipped / "bench.json"), "skipped.log", state):
        pass
    with pytest.raises(RuntimeError), cell_progress("gone", str(tmp_path / "gone/bench.json"), "gone.log", state):
        raise RuntimeError("the job failed")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"specsweep: cell 1 of 3 starting: {ok.name} (watch: tail -f ok.log)"
    # The recorded cell's first workload at concurrency 1 (tests/data/embedded_v0), and the mean cell time so far × 2.
    assert re.fullmatch(rf"specsweep: cell 1 of 3 done in \d+ s: {ok.name} ok, tg 12.1 t/s \(code_edit, c1\); "
                        r"2 left, about \d+ s", lines[1]), lines[1]  # fmt: skip
    assert re.search(r"cell 2 of 3 done in .* skipped \(suffix decoding needs arctic-inference\); 1 left, about", lines[3]), lines[3]
    assert lines[5].startswith("specsweep: cell 3 of 3 done in ") and "gone FAILED (no record; see gone.log)" in lines[5]
    assert "left" not in lines[5]


def test_a_run_that_measured_cells_only_says_the_table_was_not_rebuilt(tmp_path: Path) -> None:
    import time

    from specsweep.report.notice import run_notice

    sweep = make_sweep_dir(tmp_path / "results")
    before = time.time() - 60
    assert run_notice(sweep, before).startswith(f"specsweep: results table at {sweep}/table.csv")
    later = run_notice(sweep, time.time() + 60)
    assert "this run measured cells only; the table and reports under" in later and "results table at" not in later


def test_what_is_left_is_the_mean_cell_time_so_far_times_the_cells_left(tmp_path: Path, capsys) -> None:
    import json

    from specsweep.cell_progress import cell_progress

    sweep = make_sweep_dir(tmp_path / "results")
    state = tmp_path / "progress.json"
    # Two cells of 60 s and 119 s done; the third takes about 0 s: (60 + 119 + 0) / 3 = 59.7 s for the one left.
    state.write_text(json.dumps({"total": 4, "started": 2, "finished": 2, "cell_seconds": [60, 119]}))
    cell = sweep / "gemma3_270m-bf16-none"
    with cell_progress(cell.name, str(cell / "bench.json"), "x.log", state):
        pass
    assert capsys.readouterr().out.splitlines()[1].endswith("; 1 left, about 60 s")


def test_cells_says_what_it_expands_before_composing_and_shows_each_combination(specsweep) -> None:
    from contextlib import contextmanager

    from specsweep.config.grid import expand

    code, out, err = specsweep("cells", "k=2,4")
    assert code == 0 and err.splitlines()[0] == "[cells] expanding sweep (default) with k=2,4"
    shown: list = []

    @contextmanager
    def recorder(description: str, total: int):
        shown.append((description, total))
        yield shown.append

    cells = expand(["k=2,4"], progress=recorder)
    # 4 quants x (none, ngram) x k in (2, 4): 16 combinations composed, 12 cells (drafter=none ignores k).
    assert shown[0] == ("composing embedded", 16) and len(shown) == 17 and len(cells) == 12
    assert sorted(set(shown[1:])) == sorted(cell.id for cell in cells) and len(out.splitlines()) == 12


def test_a_cluster_sweep_without_nodes_shows_the_override_to_write(specsweep) -> None:
    code, _, err = specsweep("config", "--sweep", "spark_cluster")
    assert code == 2 and "Traceback" not in err, err  # specsweep's exit code for a config error
    assert ("serve.tensor_parallel_size=2 needs 2 Sparks: name their cluster-network IPs, this node's first: "
            '--config overrides="image.container.cluster.nodes=[IP1,IP2]"') in err  # fmt: skip
    assert "--profile spark-cluster" not in err  # the profile is how the user got here: no circular hint
