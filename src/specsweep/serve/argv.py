"""The vLLM server command of a cell, as an argv list (never a shell string)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from specsweep.config.schema import CellCfg, HubQuant, HubSource, ModelDrafter, NoQuant, ServeCfg
from specsweep.paths import project_relative
from specsweep.serve.speculative import cell_speculative_config


@dataclass(frozen=True)
class ServerCommand:
    argv: list[str]
    # Settings added to the server's environment (config values and specsweep's markers; never secrets).
    env: dict[str, str]
    host: str
    port: int
    served_name: str
    # Variables handed over from the caller's environment by name; their values appear nowhere else.
    forward_env: tuple[str, ...] = ()


def server_flags(serve: ServeCfg) -> list[str]:
    """`vllm serve` flags from the typed serve config; unset fields keep vLLM's defaults."""
    flags: list[str] = []
    valued = {
        "--max-model-len": serve.max_model_len,
        "--max-num-seqs": serve.max_num_seqs,
        "--max-num-batched-tokens": serve.max_num_batched_tokens,
        "--gpu-memory-utilization": serve.gpu_memory_utilization,
        "--kv-cache-dtype": serve.kv_cache_dtype,
        "--load-format": serve.load_format,
        "--tool-call-parser": serve.tool_call_parser,
        "--reasoning-parser": serve.reasoning_parser,
        "--tensor-parallel-size": serve.tensor_parallel_size,
    }
    for flag, value in valued.items():
        if value is not None:
            flags += [flag, str(value)]
    switches = {
        "--enable-prefix-caching": serve.enable_prefix_caching,
        "--enable-chunked-prefill": serve.enable_chunked_prefill,
    }
    for flag, enabled in switches.items():
        if enabled is True:
            flags.append(flag)
        elif enabled is False:
            flags.append("--no-" + flag.removeprefix("--"))
    if serve.enforce_eager:
        flags.append("--enforce-eager")
    if serve.enable_auto_tool_choice:
        flags.append("--enable-auto-tool-choice")
    if serve.trust_remote_code:
        flags.append("--trust-remote-code")
    if serve.default_chat_template_kwargs is not None:
        flags += ["--default-chat-template-kwargs", json.dumps(serve.default_chat_template_kwargs)]
    flags += ["--seed", str(serve.seed)]
    return flags + list(serve.extra_args)


def serving_revision(cell: CellCfg) -> str | None:
    """The hub revision of what is served: the pinned quant repo, or the base repo when it is not quantized."""
    if isinstance(cell.quant, HubQuant):
        return cell.quant.revision
    if isinstance(cell.quant, NoQuant) and isinstance(cell.model.source, HubSource):
        return cell.model.source.revision
    return None


def vllm_args(
    cell: CellCfg, port: int, dtype: str | None = None, model_is_local: bool = False, drafter_location: str | None = None
) -> list[str]:
    """Arguments after the model; identical for `vllm serve MODEL` and the api_server module.

    `dtype` is the serving dtype resolved for this host (CPU images); None passes the model's own setting. A local
    model (a prepared hub snapshot) is already pinned to its commit: no `--revision`. `drafter_location` is the
    drafter's local snapshot, served instead of its hub id.
    """
    args = [
        "--served-model-name",
        cell.model.served_name,
        "--host",
        cell.serve.host,
        "--port",
        str(port),
    ]
    revision = None if model_is_local else serving_revision(cell)
    if revision:
        args += ["--revision", revision]
    if isinstance(cell.quant, HubQuant) and cell.quant.vllm_quantization:
        args += ["--quantization", cell.quant.vllm_quantization]
    dtype = dtype or cell.model.dtype
    if dtype != "auto":
        args += ["--dtype", dtype]
    if cell.model.chat_template:
        args += ["--chat-template", str(project_relative(cell.model.chat_template))]
    args += server_flags(cell.serve)
    spec = cell_speculative_config(cell, drafter_location)
    if spec is not None:
        args += ["--speculative-config", spec]
        if isinstance(cell.drafter, ModelDrafter) and cell.drafter.target_attention_backend:
            args += ["--attention-backend", cell.drafter.target_attention_backend]
        if cell.serve.per_request_spec_decode_metrics != "none":
            args += ["--per-request-spec-decode-metrics", cell.serve.per_request_spec_decode_metrics]
    return args
