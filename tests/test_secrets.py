"""Secrets never enter config, argv or records; config values reach the server literally, never through a shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from project import server_command

from specsweep.config.compose import ConfigError, compose_cell
from specsweep.config.grid import expand
from specsweep.config.secrets import is_secret_key, redact_overrides, require_forwarded, server_environment
from specsweep.records.manifest import redact_env
from specsweep.serve.server import VllmServer

FAKE_HF = "hf_" + "Q" * 34
FAKE_OPENAI = "sk-proj-" + "Z" * 40


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "hf_token", "db_password", "AWS_SECRET_ACCESS_KEY",
                                  "OPENAI_API_KEY", "VLLM_API_KEY", "GITHUB_TOKEN"])  # fmt: skip
def test_secret_names_are_recognised_and_redacted(name: str) -> None:
    assert is_secret_key(name)
    assert redact_env({name: "s3cr3t"}) == {name: "<redacted>"}


@pytest.mark.parametrize("name", ["max_tokens", "num_speculative_tokens", "max_num_batched_tokens", "kv_cache_dtype",
                                  "eos_token_ids", "tokenizer_check", "SSH_AUTH_SOCK"])  # fmt: skip
def test_ordinary_keys_are_kept(name: str) -> None:
    assert not is_secret_key(name)


@pytest.mark.parametrize(
    "override",
    [
        f"+serve.env.HF_TOKEN={FAKE_HF}",
        "+serve.env.WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567",
        f"model.served_name={FAKE_OPENAI}",
        f"serve.extra_args=[--api-key,{FAKE_OPENAI}]",
        "serve.extra_args=[--api-key=plain-value]",
        "+serve.env.X=${oc.env:HF_TOKEN}",
    ],
)
def test_a_secret_in_an_override_is_refused_without_echoing_it(override: str) -> None:
    value = override.split("=", 1)[1].strip("[]").split(",")[-1].split("=")[-1]
    for compose in (lambda: compose_cell([override]), lambda: expand([override])):
        with pytest.raises(ConfigError) as refused:
            compose()
        message = str(refused.value)
        assert "serve.forward_env" in message
        assert value not in message


def test_a_secret_in_a_config_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from specsweep.paths import conf_dir

    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    serve = conf / "serve" / "cpu.yaml"
    serve.write_text(serve.read_text().replace("env:\n", f"env:\n  HF_TOKEN: {FAKE_HF}\n", 1))
    monkeypatch.setenv("SPECSWEEP_ROOT", str(tmp_path))
    with pytest.raises(ConfigError) as refused:
        compose_cell([])
    assert "serve.env.HF_TOKEN" in str(refused.value) and FAKE_HF not in str(refused.value)


def test_the_cli_refuses_with_exit_code_2_and_never_prints_the_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "config", "drafter=ngram", f"+serve.env.HF_TOKEN={FAKE_HF}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "secrets never go into config" in result.stderr
    assert FAKE_HF not in result.stdout + result.stderr


def test_overrides_shown_in_messages_hide_secret_values() -> None:
    shown = redact_overrides([f"+serve.env.HF_TOKEN={FAKE_HF}", "k=3", f"model.served_name={FAKE_OPENAI}"])
    assert shown == ["+serve.env.HF_TOKEN=<redacted>", "k=3", "model.served_name=<redacted>"]


def test_forwarded_variables_reach_docker_by_name_only() -> None:
    cell = compose_cell(["sweep=spark", "drafter=gemma_mtp", "serve.forward_env=[HF_TOKEN]"]).cell
    command = server_command(cell, "google/gemma-4-31B-it", 8000, container_name="c")
    at = command.argv.index("HF_TOKEN")
    assert command.argv[at - 1] == "-e"
    assert command.forward_env == ("HF_TOKEN",)
    assert not any("HF_TOKEN=" in part for part in command.argv)


def test_the_server_gets_forwarded_secrets_and_no_others() -> None:
    environ = {"PATH": "/bin", "HF_TOKEN": FAKE_HF, "WANDB_API_KEY": "w" * 40, "OPENAI_API_KEY": FAKE_OPENAI}
    env = server_environment(environ, ["HF_TOKEN"], {"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert env == {"PATH": "/bin", "HF_TOKEN": FAKE_HF, "VLLM_CPU_KVCACHE_SPACE": "1"}


def test_a_forwarded_variable_that_is_not_set_fails_naming_the_fix() -> None:
    with pytest.raises(ValueError, match=r"HF_TOKEN, not set in this environment: export HF_TOKEN=\.\.\."):
        require_forwarded(["HF_TOKEN"], {"PATH": "/bin"})


def test_bad_forward_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="forward_env"):
        compose_cell(["serve.forward_env=[HF TOKEN]"])


STAND_IN = """
import json, os, sys
with open(os.environ["ARGV_OUT"], "w") as handle:
    json.dump({"argv": sys.argv[1:], "hf": os.environ.get("HF_TOKEN"), "wandb": os.environ.get("WANDB_API_KEY")}, handle)
"""


def test_config_values_arrive_literally_through_the_real_launch_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's launch path (VllmServer.start) with a stand-in module for vLLM that records what it got."""
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    victim = tmp_path / "victim"
    victim.mkdir()
    hostile = f"m; rm -rf {victim}; touch {tmp_path}/pwned $(touch {tmp_path}/pwned2) `touch {tmp_path}/pwned3`"
    out = tmp_path / "argv.json"
    cell = compose_cell(
        [
            "image.module=stand_in",
            f"model.served_name='{hostile}'",
            f"+serve.env.PYTHONPATH={tmp_path}",
            f"+serve.env.ARGV_OUT={out}",
            "serve.forward_env=[HF_TOKEN]",
        ]
    ).cell
    monkeypatch.setenv("HF_TOKEN", FAKE_HF)
    monkeypatch.setenv("WANDB_API_KEY", "w" * 40)
    server = VllmServer(server_command(cell, "/m", 1, image_root=tmp_path / "env"), tmp_path / "server.log", 10)
    server.start()
    assert server.wait_exit(30) == 0, (tmp_path / "server.log").read_text()
    got = json.loads(out.read_text())
    assert got["argv"][got["argv"].index("--served-model-name") + 1] == hostile
    assert victim.is_dir()
    assert not any((tmp_path / name).exists() for name in ("pwned", "pwned2", "pwned3"))
    assert got["hf"] == FAKE_HF and got["wandb"] is None


def test_the_bench_takes_its_api_key_from_the_environment_never_argv() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "specsweep.cli", "bench", "--base-url", "http://127.0.0.1:9/v1", "--tokenizer", "t",
         "--api-key", FAKE_OPENAI],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "export OPENAI_API_KEY=..." in result.stderr and FAKE_OPENAI not in result.stderr
