"""Quality you can trust, end to end on the shared embedded sweep (real vLLM on CPU): losslessness per cell,
endpoint PPL/KLD against the in-process figures, lm-eval against the cells' servers, all in the reports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from specsweep.config.compose import compose_cell
from specsweep.evals.distributions import ScoredWindows, compare, same_checkpoint_problem
from specsweep.evals.endpoint import SCORED_FILE
from specsweep.evals.lm_eval import lm_eval_argv, lm_eval_env

pytestmark = pytest.mark.slow

SERVED_QUANTS = ["bf16", "int4_autoround_fast", "w4a16_gptq"]
TASK = "specsweep_facts"


@pytest.fixture(scope="module")
def evals(swept: Path) -> pd.DataFrame:
    return pd.read_csv(swept / "results/embedded/evals.csv").set_index("cell_id")


def test_every_ngram_cell_is_lossless_at_concurrency_1(evals: pd.DataFrame) -> None:
    drafted = evals[(evals.drafter_kind == "ngram") & (evals.status == "ok")]
    assert len(drafted) == 4
    assert (drafted.lossless_match_pct == 100).all(), drafted.lossless_detail.tolist()
    assert drafted.lossless_detail.str.startswith("identical (").all()
    # Identical over real tokens: every one of the 4 prompts generated (zero compared tokens is an error, not 100 %).
    compared = drafted.lossless_detail.str.extract(r"identical \((\d+) tokens, (\d+) prompts")
    assert (compared[1].astype(int) == 4).all() and (compared[0].astype(int) >= 4).all(), compared
    for cell_id, row in drafted.iterrows():
        assert row.lossless_reference_cell == f"gemma3_270m-{row.quant}-none"
    # Reference cells compare with nothing.
    assert evals[evals.drafter_kind == "none"].lossless_match_pct.isna().all()


def test_endpoint_figures_agree_with_the_in_process_figures(swept: Path, evals: pd.DataFrame) -> None:
    """The served model is the checkpoint the in-process job measured (for W4A16 on CPU: the int4 kernel vLLM
    chose computes the quantized model), and the endpoint's PPL and top-k KLD reproduce the in-process ones."""
    for quant in SERVED_QUANTS:
        row = evals.loc[f"gemma3_270m-{quant}-none"]
        assert row.served_checkpoint_check == "ok", (quant, row.served_checkpoint_check)
        assert row.endpoint_reference_cell == "gemma3_270m-bf16-none"
        # Same windows, same formulas: served fp32 vs in-process fp32 differ by float noise only.
        assert abs(row.endpoint_ppl / row.inprocess_ppl - 1) < 0.01, quant
        assert row.endpoint_kld_topk == pytest.approx(row.inprocess_kld_topk, rel=0.05, abs=1e-4), quant
        # The top-k KLD is a lower bound of the full KLD the in-process job measured.
        assert row.endpoint_kld_topk <= row.inprocess_kld * 1.01 + 1e-6
        assert abs(row.served_vs_inprocess_ppl_delta_pct) < 1 and row.served_vs_inprocess_kld_topk < 1e-3
    # (The base cell's own endpoint row is the reference of the others; the loop above checks it against the
    # in-process job, two different engines whose answer is known: the same checkpoint.)
    for quant in ("int4_autoround_fast", "w4a16_gptq"):
        row = evals.loc[f"gemma3_270m-{quant}-none"]
        assert row.endpoint_kld_topk > 0.01 and row.endpoint_ppl_recovery_pct < 100 and row.endpoint_top1_agreement < 1


def test_a_wrong_checkpoint_behind_the_server_is_caught(swept: Path, evals: pd.DataFrame) -> None:
    """What each served cell returned, checked against another quant's in-process logprobs: always a mismatch."""
    quality = pd.read_csv(swept / "results/embedded/quality.csv").set_index("quant")

    def served(quant: str) -> ScoredWindows:
        return ScoredWindows.model_validate_json((swept / f"results/embedded/gemma3_270m-{quant}-none/{SCORED_FILE}").read_text())

    def in_process(quant: str) -> ScoredWindows:
        return ScoredWindows.model_validate_json(Path(quality.loc[quant, "scored"]).read_text())

    for served_quant in SERVED_QUANTS:
        for measured_quant in SERVED_QUANTS:
            problem = same_checkpoint_problem(compare(in_process(measured_quant), served(served_quant)))
            if served_quant == measured_quant:
                assert problem is None
            else:
                assert problem is not None and "diverge" in problem, (served_quant, measured_quant)


def test_lm_eval_scores_every_quant_through_its_server(swept: Path, evals: pd.DataFrame) -> None:
    column = f"lm_eval_{TASK}"
    for quant in SERVED_QUANTS:
        row = evals.loc[f"gemma3_270m-{quant}-none"]
        # Four-choice questions, the first 24 of 95 in the test-sized sweep: chance is 0.25.
        assert row[column] > 0.5 and row[f"{column}_metric"] == "acc,none" and row[f"{column}_n"] == 24, quant
        assert 0 < row[f"{column}_stderr"] < 0.15
        assert row[f"{column}_recovery_pct"] == pytest.approx(100 * row[column] / evals.loc["gemma3_270m-bf16-none", column])
        results = json.loads((swept / f"results/embedded/gemma3_270m-{quant}-none/lm_eval_results.json").read_text())
        assert results["results"][TASK]["acc,none"] == row[column]
    assert evals.loc["gemma3_270m-bf16-none", f"{column}_recovery_pct"] == 100
    # The cross-check cell: a drafter does not change log-likelihood scores.
    cross = evals[evals[column].notna() & (evals.drafter_kind != "none")]
    assert list(cross.index) == ["gemma3_270m-bf16-ngram-k2"]
    assert cross.iloc[0][column] == evals.loc["gemma3_270m-bf16-none", column]
    # The other drafter cells ran no lm-eval.
    assert evals[evals.drafter_kind != "none"][column].notna().sum() == 1


def test_quality_is_in_the_table_and_the_reports(swept: Path) -> None:
    sweep = swept / "results/embedded"
    table = pd.read_csv(sweep / "table.csv")
    for column in ("lossless_match_pct", "endpoint_kld_topk", "served_checkpoint_check", f"lm_eval_{TASK}"):
        assert column in table
    served = table[table.status == "ok"]
    assert served[served.drafter_kind == "ngram"].lossless_match_pct.eq(100).all()
    html = (sweep / "report.html").read_text()
    assert "Quality per cell (through the served endpoint)" in html and 'id="fig-pareto"' in html
    assert "Not lossless" not in html and "Served checkpoint mismatch" not in html
    markdown = (sweep / "tables.md").read_text()
    assert "## Quality per cell" in markdown and TASK in markdown
    # Eval rows carry the manifest keys throughput rows carry.
    evals = pd.read_csv(sweep / "evals.csv")
    for key in ("config_hash", "image_key", "vllm_version", "git_sha", "model_source_sha256"):
        assert key in evals and key in table


# lm-eval's own CLI parser on an argv specsweep built: the fields the tests read, as lm-eval parsed them.
LM_EVAL_PARSE = (
    "import json, sys\nfrom lm_eval._cli import HarnessCLI\n"
    "args = HarnessCLI()._parser.parse_args(sys.argv[1:])\n"
    "print(json.dumps({name: getattr(args, name) for name in ('model', 'tasks', 'model_args', 'num_fewshot', "
    "'batch_size', 'limit', 'gen_kwargs')}, default=str))"
)


def parsed_by_lm_eval(python: str, argv: list[str]) -> dict:
    parsed = subprocess.run([python, "-c", LM_EVAL_PARSE, *argv[3:]], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    return json.loads(parsed.stdout.strip().splitlines()[-1])


def test_lm_evals_own_parsers_accept_the_argv_and_the_task(swept: Path) -> None:
    """lm-eval's CLI parser takes the argv specsweep builds, and its validator accepts the shipped task."""
    env = lm_eval_env()
    cfg = compose_cell([]).cell.eval.lm_eval
    argv = lm_eval_argv(str(env.python_bin), cfg, "http://127.0.0.1:8000", "gemma-3-270m", "/m", 2048, Path("/o"))
    args = parsed_by_lm_eval(str(env.python_bin), argv)
    assert args["model"] == "local-completions" and TASK in str(args["tasks"]) and args["num_fewshot"] == 0
    assert "base_url" in str(args["model_args"]) and "add_bos_token" in str(args["model_args"])
    validated = subprocess.run(
        [str(env.python_bin), "-m", "lm_eval", "validate", "--tasks", TASK, "--include_path", str(swept / "data/eval/lm_eval")],
        capture_output=True, text=True, cwd=swept,
    )  # fmt: skip
    assert validated.returncode == 0, (validated.stdout + validated.stderr)[-2000:]
    # The Spark eval's subset, concurrency and token budget parse as lm-eval reads them.
    spark = compose_cell(["sweep=spark"]).cell.eval.lm_eval
    argv = lm_eval_argv(str(env.python_bin), spark, "http://127.0.0.1:8000", "gemma-4", "/m", None, Path("/o"))
    args = parsed_by_lm_eval(str(env.python_bin), argv)
    assert args["limit"] == 250 and args["gen_kwargs"] == {"max_gen_toks": 256}
    assert (args["model_args"]["num_concurrent"], args["model_args"]["timeout"]) == (4, 188)
