"""The vLLM server command as an argv list, for CPU (venv) and Spark (docker)."""

from __future__ import annotations

import json
from pathlib import Path

from project import server_command

from specsweep.config.compose import compose_cell


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_cpu_command_uses_the_module_entry_point_and_binds_loopback() -> None:
    cell = compose_cell(["drafter=ngram", "k=3"]).cell
    command = server_command(cell, "/models/m", 12345, image_root=Path("/envs/vllm"))
    argv = command.argv
    assert argv[:3] == ["/envs/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag_value(argv, "--model") == "/models/m"
    assert flag_value(argv, "--host") == "127.0.0.1"
    assert flag_value(argv, "--port") == "12345"
    assert "--enforce-eager" in argv
    assert flag_value(argv, "--speculative-config").startswith('{"method":"ngram"')
    # Per-step drafted/accepted traces for the k-advisor; switchable off.
    assert flag_value(argv, "--per-request-spec-decode-metrics") == "detailed"
    quiet = compose_cell(["drafter=ngram", "k=3", "serve.per_request_spec_decode_metrics=none"]).cell
    assert "--per-request-spec-decode-metrics" not in server_command(quiet, "/m", 1, image_root=Path("/e")).argv
    assert command.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and command.env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_no_drafter_passes_no_speculative_flag() -> None:
    argv = server_command(compose_cell([]).cell, "/m", 1, image_root=Path("/e")).argv
    # vLLM refuses --per-request-spec-decode-metrics without speculative decoding.
    assert "--speculative-config" not in argv and "--per-request-spec-decode-metrics" not in argv


def test_spark_command_is_vllm_serve_in_docker_with_the_seed_flags() -> None:
    cell = compose_cell(["sweep=spark", "drafter=gemma_mtp", "k=7"]).cell
    argv = server_command(cell, "google/gemma-4-31B-it", 8000, container_name="specsweep-x").argv
    assert argv[:4] == ["docker", "run", "--name", "specsweep-x"] and "--rm" in argv
    serve_at = argv.index("vllm")
    assert argv[serve_at - 1].startswith("<id of the image built from spec ")
    assert argv[serve_at : serve_at + 3] == ["vllm", "serve", "google/gemma-4-31B-it"]
    for flag, value in {
        "--max-model-len": "262144",
        "--max-num-seqs": "4",
        "--max-num-batched-tokens": "16384",
        "--gpu-memory-utilization": "0.85",
        "--kv-cache-dtype": "fp8_e4m3",
        "--load-format": "instanttensor",
        "--revision": "main",
    }.items():
        assert flag_value(argv, flag) == value
    assert "--enable-prefix-caching" in argv and "--enable-chunked-prefill" in argv
    assert "--enforce-eager" not in argv
    assert flag_value(argv, "--speculative-config") == (
        '{"method":"mtp","model":"google/gemma-4-31B-it-assistant","num_speculative_tokens":7}'
    )
    assert "--gpus" in argv and "--ipc=host" in argv


def test_false_switch_is_passed_explicitly() -> None:
    cell = compose_cell(["serve.enable_prefix_caching=false"]).cell
    assert "--no-enable-prefix-caching" in server_command(cell, "/m", 1, image_root=Path("/e")).argv


def test_embedded_model_gets_the_shipped_chat_template(root: Path) -> None:
    argv = server_command(compose_cell([]).cell, "/m", 1, image_root=Path("/e")).argv
    template = Path(flag_value(argv, "--chat-template"))
    assert template == root / "data/chat_templates/gemma3.jinja" and template.is_file()
    spark = server_command(compose_cell(["sweep=spark"]).cell, "/m", 1, container_name="c").argv
    assert "--chat-template" not in spark


def test_a_resolved_dtype_replaces_auto() -> None:
    cell = compose_cell([]).cell
    assert cell.model.dtype == "auto"
    assert "--dtype" not in server_command(cell, "/m", 1, image_root=Path("/e")).argv
    argv = server_command(cell, "/m", 1, image_root=Path("/e"), dtype="bfloat16").argv
    assert flag_value(argv, "--dtype") == "bfloat16"


def test_spark_serves_chat_the_way_the_users_do() -> None:
    cell = compose_cell(["sweep=spark", "quant=ebircak_nvfp4a16_gptq"]).cell
    argv = server_command(cell, cell.quant.repo_id, 8000, container_name="c").argv
    assert flag_value(argv, "--tool-call-parser") == "gemma4" and flag_value(argv, "--reasoning-parser") == "gemma4"
    assert "--enable-auto-tool-choice" in argv
    assert json.loads(flag_value(argv, "--default-chat-template-kwargs")) == {"enable_thinking": True}
    assert flag_value(argv, "--quantization") == "compressed-tensors"
    assert flag_value(argv, "--served-model-name") == "Gemma4-31b-it"


def test_numbers_in_extra_args_become_argv_text() -> None:
    cell = compose_cell(["serve.extra_args=[--max-num-seqs,4,--enable-x,true]"]).cell
    assert cell.serve.extra_args == ["--max-num-seqs", "4", "--enable-x", "true"]
