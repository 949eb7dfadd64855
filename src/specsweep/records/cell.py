"""A cell's record (bench.json) and its parts: each workload's rows and requests, the server's memory."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from specsweep.records.base import Record
from specsweep.records.bench import BenchRow
from specsweep.records.evals import CellEvals

# Where a failed cell's bench.json is moved once the sweep has reported it, so the next run reruns the cell.
FAILURE_RECORD = "failure.json"


class RequestRecord(BaseModel):
    run: int
    ok: bool
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    token_source: str | None
    ttfr_s: float | None
    e2e_ttft_s: float | None
    token_ids: list[int]
    text: str
    # Per verify step, tokens drafted and accepted (vLLM's per_step_drafted / per_step_accepted; drafter cells).
    spec_per_step_drafted: list[int] | None = None
    spec_per_step_accepted: list[int] | None = None


class WorkloadRecord(BaseModel):
    workload: str
    concurrency: int
    prompt_file: str
    prompt_sha256: str
    max_tokens: int
    # llama-benchy's figures for this workload, with acceptance over exactly its requests.
    row: BenchRow
    requests: list[RequestRecord]


class MemoryRecord(BaseModel):
    """How much memory a cell took: which model + drafter + k fits, and with how much context."""

    # Weight files of the served checkpoint and of the drafter on disk.
    weights_disk_bytes: int | None = None
    drafter_weights_disk_bytes: int | None = None
    # From vLLM's log: the checkpoint it loaded ("Checkpoint size", CPU), the weights in device memory ("Model loading
    # took", GPU), the memory given to the KV cache and the KV-cache capacity in tokens ("KV cache size") with the
    # concurrency it allows at max_model_len.
    checkpoint_gib: float | None = None
    model_memory_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    kv_cache_max_concurrency: float | None = None
    max_model_len: int | None = None
    # Sampled while the server lived: the largest sum of RSS over its processes (API server, engine core, workers;
    # found by the cell's marker, in a container too). Pages two processes share count twice there; PSS (shared
    # pages split between the processes that map them) is read once, after the workloads and evals.
    peak_rss_bytes: int | None = None
    pss_at_end_bytes: int | None = None
    processes: int | None = None
    samples: int = 0


class CellRecord(Record):
    """A cell's measurement (bench.json): its status, every workload's rows, the evals."""

    SCHEMA_VERSION = 2
    sweep: str
    cell_id: str
    # failed: the cell ran and broke (server died, every request failed); `error` and the log tail say how.
    status: Literal["ok", "skipped", "failed"]
    skip_reason: str | None = None
    error: str | None = None
    server_log_tail: list[str] = []
    model: str
    quant: str
    drafter: str
    drafter_kind: str
    # None for drafter=none: k does not apply.
    k: int | None
    speculative_config: str | None
    server_startup_s: float | None = None
    # The image that served it (venv root or container image id) and its vLLM commit and applied PRs.
    image_id: str | None = None
    vllm_commit: str | None = None
    vllm_prs: list[int] = []
    # The dtype the server ran in (resolved per host on CPU) and, for W4A16 quants, the kernel specsweep chose.
    dtype: str | None = None
    wna16_kernel_selected: str | None = None
    # The kernel vLLM chose for quantized linear layers (from its log): says whether tok/s are int4-kernel figures.
    quant_kernel: str | None = None
    latency_ms: float | None = None
    workloads: list[WorkloadRecord] = []
    # The plan picked this cell for lm-eval (eval.lm_eval.cells); the evals it ran after the workloads.
    lm_eval_selected: bool = False
    evals: CellEvals | None = None
    memory: MemoryRecord | None = None
