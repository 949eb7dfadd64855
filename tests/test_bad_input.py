"""Bad input fails before any job runs, naming the valid choices or the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from project import make_project, snakemake

from specsweep.config.compose import ConfigError
from specsweep.config.grid import expand

CASES = {
    "unknown option": (["drafter=ngarm"], r"Could not find 'drafter/ngarm'.*Available options in 'drafter'.*ngram"),
    "unknown key": (["serve.max_modl_len=1"], r"unknown key 'serve.max_modl_len' \(did you mean serve.max_model_len\?\); valid keys under serve: .*max_model_len"),
    "unknown key of an option": (["+drafter.lookahead=2", "drafter=ngram"],
                                 r"drafter.lookahead: unknown key; remove it \(valid keys: kind, name, prompt_lookup_max"),
    "unknown nested key": (["quant=w4a16_gptq", "+quant.calibration.samples=2"],
                           r"quant.calibration.samples: unknown key; remove it \(valid keys: kind, num_samples, path"),
    "k zero": (["drafter=ngram", "k=0"], r"k: Input should be greater than or equal to 1"),
    "k negative in a sweep": (["drafter=ngram", "k=3,-1"], r"k: Input should be greater than or equal to 1"),
    "k not a number": (["drafter=ngram", "k=seven"], r"k: Input should be a valid integer"),
    "k without a drafter": (["drafter=none", "k=7"], r"k=7 sets the draft length, but no cell has a drafter.*drafter=ngram k=7"),
    "drafter for another model": (["drafter=gemma_mtp"], r"drafts for model gemma4_31b_it, not gemma3_270m; pick model=gemma4_31b_it"),
    "quant for another model": (["quant=intel_int4_autoround"], r"checkpoint of model gemma4_31b_it, not gemma3_270m"),
    "generation longer than the context": (["bench.workloads.0.max_tokens=4096"], r"max_tokens >= serve.max_model_len \(2048\)"),
    "override syntax": (["k=[1,"], r"cannot parse overrides .*k=\[1,"),
    "empty choice": (["drafter=choice()"], r"empty choice is not legal"),
    "unknown sweep": (["sweep=nope"], r"Could not find 'sweep/nope'.*embedded"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_config_error_that_names_the_fix(case: str) -> None:
    overrides, message = CASES[case]
    with pytest.raises(ConfigError, match=f"(?s){message}"):
        expand(overrides)


def test_an_empty_sweep_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path / "p")
    (project / "conf/sweep/empty.yaml").write_text("name: empty\nparams: []\n")
    monkeypatch.setenv("SPECSWEEP_ROOT", str(project))
    with pytest.raises(ConfigError, match="sweep empty expands to no cells; check its params"):
        expand([], "empty")


@pytest.mark.slow  # three Snakemake starts; the same refusals are checked in process above
@pytest.mark.parametrize(
    "config,message",
    [
        (["overrides=drafter=ngram k=0"], "k: Input should be greater than or equal to 1"),
        (["overrides=drafter=gemma_mtp"], "drafts for model gemma4_31b_it"),
        (["sweep=empty"], "sweep empty expands to no cells"),
    ],
)
def test_snakemake_stops_before_any_job(tmp_path: Path, config: list[str], message: str) -> None:
    project = make_project(tmp_path / "p")
    (project / "conf/sweep/empty.yaml").write_text("name: empty\nparams: []\n")
    result = snakemake(project, "--config", *config, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "specsweep: config error: " in output and message in output, output[-2000:]
    assert "Traceback" not in output
    assert not (project / "results").exists()
