"""How a cell's server runs and what it measures: serve, bench, evals."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from specsweep.config.schema.base import Strict


class ServeCfg(Strict):
    """vLLM server flags. ``None`` leaves vLLM's own default in place (the flag is not passed)."""

    name: str
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    max_model_len: int | None = Field(default=None, ge=16)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=16)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_dtype: str | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False
    load_format: str | None = None
    # Chat serving as the users run it: tool calls and reasoning parsed by the model's own parsers, template
    # arguments (e.g. {"enable_thinking": true}) applied to every chat request.
    enable_auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    default_chat_template_kwargs: dict[str, str | int | float | bool] | None = None
    trust_remote_code: bool = False
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    seed: int = 0
    # Drafter cells only (vLLM refuses it without speculative decoding): `detailed` adds, per request, how many tokens
    # each verify step drafted and accepted; the k-advisor replays dynamic-k policies on those traces.
    per_request_spec_decode_metrics: Literal["none", "summary", "detailed"] = "detailed"
    extra_args: list[str] = []
    # Plain settings only: a secret-looking key or token-shaped value is refused (specsweep.config.secrets).
    env: dict[str, str] = {}
    # Names of environment variables handed to the server (HF_TOKEN, VLLM_API_KEY, ...): their values are read
    # at launch and passed by name, never written to config, argv or records. Other secret-looking variables of
    # the caller's environment are withheld from the server.
    forward_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = []
    startup_timeout_s: float = Field(default=600, gt=0)
    shutdown_timeout_s: float = Field(default=30, gt=0)

    @field_validator("extra_args", mode="before")
    @classmethod
    def _args_as_text(cls, value):
        # `serve.extra_args=[--max-num-seqs,4]`: Hydra reads 4 as a number; argv items are text.
        if isinstance(value, list):
            return [str(item).lower() if isinstance(item, bool) else str(item) for item in value]
        return value



class WorkloadCfg(Strict):
    """A task workload: one real prompt from data/, greedy, at each concurrency level."""

    name: str
    prompt_file: str
    max_tokens: int = Field(ge=1)
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(default=[1], min_length=1)


class SyntheticCfg(Strict):
    """llama-benchy's rows: prompts of exactly pp tokens after depth tokens of context, tg tokens generated
    (`specsweep bench` runs the same engine against any server)."""

    pp: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    tg: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    depth: list[Annotated[int, Field(ge=0)]] = Field(default=[0], min_length=1)
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(default=[1], min_length=1)
    # The text prompts are cut from, with the served model's own tokenizer.
    text: str = "data/text/alice.txt"
    # llama-benchy's --book-url: a book fetched once and cached, used instead of `text` where the host can reach it
    # (null: always `text`, as on the offline embedded path).
    book_url: str | None = None


class BenchCfg(Strict):
    name: str
    # Raw-text completions suit base models (the embedded one); chat suits instruction-tuned ones.
    endpoint: Literal["completions", "chat"] = "completions"
    runs: int = Field(default=2, ge=1)
    latency_mode: Literal["api", "generation", "none"] = "api"
    request_timeout_s: float = Field(default=300, gt=0)
    workloads: list[WorkloadCfg] = Field(min_length=1)
    # llama-benchy rows, after the task workloads (None: none).
    synthetic: SyntheticCfg | None = None



class LosslessCfg(Strict):
    """Greedy outputs of a fixed prompt set at concurrency 1: a drafter cell must reproduce its quant's no-drafter
    cell token for token (under load, batch shapes can change floating-point results, so never compared there)."""

    prompts: str = "data/eval/lossless_prompts.jsonl"
    max_tokens: int = Field(default=64, ge=1)


class EndpointQualityCfg(Strict):
    """Prompt logprobs (top-k) of held-out windows on each quant's no-drafter cell: PPL, top-k KLD, top-1
    agreement vs the base's no-drafter cell. The windows are the quality group's, so the in-process figures of
    a local quant are directly comparable."""

    text: str
    window: int = Field(ge=16)
    num_windows: int = Field(ge=1)
    top_k: int = Field(default=20, ge=1)


# Seconds a request may spend before its first token (prompt processing, queueing behind other requests).
PREFILL_ALLOWANCE_S = 60.0


class LmEvalCfg(Strict):
    """lm-evaluation-harness against the cell's running server (its own venv)."""

    tasks: list[str] = Field(min_length=1)
    # A directory of task YAMLs of the project's own (relative to the project root); None: lm-eval's built-in tasks.
    include_path: str | None = None
    num_fewshot: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)
    model: Literal["local-completions", "local-chat-completions"] = "local-completions"
    batch_size: int = Field(default=8, ge=1)
    # Requests in flight at once (lm-eval's num_concurrent); the server's max_num_seqs is the useful ceiling.
    num_concurrent: int = Field(default=1, ge=1)
    # Tokens generated per question at most (lm-eval's --gen_kwargs max_gen_toks; None: each task's own default).
    max_gen_toks: int | None = Field(default=None, ge=1)
    # The slowest decode rate per request (at num_concurrent) the run must still finish at: with limit and
    # max_gen_toks it gives the timeout when timeout_s is None.
    min_decode_tps: float = Field(default=2.0, gt=0)
    # baselines_plus_one: each quant's no-drafter cell plus one drafter cell (the drafter must not change scores).
    cells: Literal["baselines_plus_one", "baselines", "all"] = "baselines_plus_one"
    # The whole run's limit; None: derived from the token budget (run_timeout_s).
    timeout_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _timeout_known(self) -> "LmEvalCfg":
        if self.timeout_s is None and (self.limit is None or self.max_gen_toks is None):
            raise ValueError(
                "eval.lm_eval.timeout_s is null, so it is derived from the token budget, which needs eval.lm_eval.limit "
                "(questions per task) and eval.lm_eval.max_gen_toks; set both, or set timeout_s"
            )
        return self

    def request_timeout_s(self) -> float:
        """One request's limit: its whole token budget at the slowest tolerated rate, plus a minute for its prefill."""
        if self.max_gen_toks is None:
            assert self.timeout_s is not None
            return self.timeout_s
        return PREFILL_ALLOWANCE_S + self.max_gen_toks / self.min_decode_tps

    def run_timeout_s(self) -> float:
        """The whole run's limit: every question's request timeout, num_concurrent at a time."""
        if self.timeout_s is not None:
            return self.timeout_s
        assert self.limit is not None
        rounds = -(-self.limit * len(self.tasks) // self.num_concurrent)
        return rounds * self.request_timeout_s()


class EvalCfg(Strict):
    name: str
    # None switches a part off.
    lossless: LosslessCfg | None = LosslessCfg()
    endpoint_quality: EndpointQualityCfg | None = None
    lm_eval: LmEvalCfg | None = None
