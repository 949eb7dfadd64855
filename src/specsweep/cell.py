"""Run one cell: one server lifetime, every workload against it, counters diffed around each workload."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from specsweep.atomic import write_json, write_text
from specsweep.bench.runner import Bench, BenchSettings
from specsweep.bench.stats import RequestTiming
from specsweep.cache_check import CorruptEntry, require_receipt_intact
from specsweep.config.compose import canonical, cell_yaml, config_hash
from specsweep.config.grid import Cell
from specsweep.config.schema import CellCfg
from specsweep.config.secrets import require_forwarded
from specsweep.evals.in_cell import run_evals
from specsweep.exit_status import describe_exit
from specsweep.images.base import ImageBackend, LaunchSpec, backend_of, unsupported_reason
from specsweep.images.container import run_labels
from specsweep.images.cpu_host import uses_wna16
from specsweep.models.hub import snapshot_problems
from specsweep.paths import project_relative
from specsweep.records import manifest as mf
from specsweep.records.cell import FAILURE_RECORD, CellRecord, RequestRecord, WorkloadRecord
from specsweep.records.host import ServingChoice
from specsweep.records.hub import HubSnapshot
from specsweep.records.image import ImageRecord, PreflightRecord
from specsweep.records.model import ModelRecord
from specsweep.records.quant import QuantRecord
from specsweep.serve.argv import ServerCommand
from specsweep.serve.logs import failure_excerpt
from specsweep.serve.memory import PeakMemory, memory_record
from specsweep.serve.server import PortInUse, ServerError, VllmServer, free_port
from specsweep.serve.speculative import cell_speculative_config

# Environment marker on the server and its workers, so a leaked process can be traced to its cell.
CELL_MARKER_ENV = "SPECSWEEP_CELL_DIR"
# How long a server whose requests failed gets to exit before the cell blames the requests instead.
SERVER_EXIT_GRACE_S = 15
# Free ports tried when the chosen one is taken before vLLM binds it.
PORT_ATTEMPTS = 3
# Server-log lines kept in a failed cell's record (and shown in the table and reports).
FAILURE_LOG_LINES = 50


class CellFailed(RuntimeError):
    """The cell ran but produced no usable measurement (the server died, every request failed)."""


class PreflightFailed(RuntimeError):
    """The image cannot serve what the sweep's cells ask (checked once per image, before any server starts)."""


def quant_kernel(server_log: Path) -> str | None:
    if not server_log.is_file():  # the cell failed before its server started
        return None
    found = re.search(r"Using (\w+) for (?:mixed-precision linear|\w+ linear)", server_log.read_text(errors="replace"))
    return found.group(1) if found else None


def request_record(run: int, timing: RequestTiming) -> RequestRecord:
    """What the bench client saw of one request, as the cell records it."""
    return RequestRecord(
        run=run,
        ok=timing.error is None,
        error=timing.error,
        prompt_tokens=timing.prompt_tokens,
        completion_tokens=timing.total_tokens,
        token_source=timing.token_source,
        ttfr_s=None if timing.first_response_ts is None else timing.first_response_ts - timing.start_ts,
        e2e_ttft_s=None if timing.first_token_ts is None else timing.first_token_ts - timing.start_ts,
        token_ids=timing.token_ids,
        text=timing.text,
        spec_per_step_drafted=(timing.spec_stats or {}).get("per_step_drafted"),
        spec_per_step_accepted=(timing.spec_stats or {}).get("per_step_accepted"),
    )


def _record(name: str, concurrency: int, prompt_file: str, prompt_text: str, max_tokens: int, row, requests) -> WorkloadRecord:
    return WorkloadRecord(
        workload=name,
        concurrency=concurrency,
        prompt_file=prompt_file,
        prompt_sha256=hashlib.sha256(prompt_text.encode()).hexdigest(),
        max_tokens=max_tokens,
        row=row,
        requests=[request_record(index // concurrency, timing) for index, timing in enumerate(requests)],
    )


async def run_workloads(server: VllmServer, cell: CellCfg, tokenizer_dir: str | None = None) -> tuple[list[WorkloadRecord], float]:
    """The task workloads, then llama-benchy's pp/tg/depth rows (cut with the served model's tokenizer)."""
    synthetic = cell.bench.synthetic
    prompts = book = None
    if synthetic is not None:
        from specsweep.bench.book import bench_text
        from specsweep.bench.corpus import PromptSource, load_tokenizer

        book = bench_text(synthetic.book_url, synthetic.text)
        # Seeded by the cell's seed: the same cell cuts the same prompts in every run.
        prompts = PromptSource(load_tokenizer(tokenizer_dir or ""), book.path, seed=cell.serve.seed)
    concurrency = {c for w in cell.bench.workloads for c in w.concurrency} | set(synthetic.concurrency if synthetic else [])
    settings = BenchSettings(
        base_url=f"{server.base_url}/v1",
        model=server.command.served_name,
        runs=cell.bench.runs,
        concurrency=sorted(concurrency),
        latency_mode=cell.bench.latency_mode,
        endpoint=cell.bench.endpoint,
        exact_tg=False,
        request_timeout_s=cell.bench.request_timeout_s,
        # The cell's server is fresh: a fixed run id gives the same prompts in every rerun of the cell.
        nonce=f"seed{cell.serve.seed}",
    )
    bench = Bench(settings, prompts)
    records = []
    async with bench.session() as session:
        await bench.start(session)
        for workload in cell.bench.workloads:
            prompt = project_relative(workload.prompt_file).read_text()
            for concurrency in workload.concurrency:
                row, requests = await bench.task(session, workload.name, prompt, workload.max_tokens, concurrency)
                records.append(_record(workload.name, concurrency, workload.prompt_file, prompt, workload.max_tokens,
                                       row, requests))  # fmt: skip
        if synthetic is not None:
            # llama-benchy's rows generate exactly tg tokens (task workloads stop where the model stops).
            bench.settings = bench.settings.model_copy(update={"exact_tg": True})
            for depth in synthetic.depth:
                for pp in synthetic.pp:
                    for tg in synthetic.tg:
                        for concurrency in synthetic.concurrency:
                            row, requests = await bench.synthetic(session, depth, pp, tg, concurrency)
                            records.append(_record(f"pp{pp}_tg{tg}_d{depth}", concurrency, book.source, book.text, tg,
                                                   row, requests))  # fmt: skip
    return records, bench.latency_s * 1000


@dataclass(frozen=True)
class Launch:
    kind: ImageBackend
    spec: LaunchSpec
    command: ServerCommand
    # CPU images: the dtype and int4 kernel decided for this host; None where the GPU image's vLLM decides.
    serving: ServingChoice | None


def plan_launch(
    cfg: CellCfg, model_location: str, image: ImageRecord, sweep: str, cell_id: str, out_dir: Path,
    drafter_location: str | None = None,
) -> Launch:  # fmt: skip
    """The server command of a cell on this host: its dtype and int4 kernel as the image's probe decided."""
    require_forwarded(cfg.serve.forward_env, dict(os.environ))
    kind = backend_of(cfg.image)
    serving = image.serving_by_dtype.get(cfg.model.dtype)
    spec = LaunchSpec(cell=cfg, model_location=model_location, port=cfg.serve.port or free_port(cfg.serve.host),
                      name=f"specsweep-{sweep}-{cell_id}", dtype=serving.dtype if serving else None,
                      env={CELL_MARKER_ENV: str(out_dir.resolve()), **kind.launch_env(cfg, image, serving)},
                      labels=run_labels(str(out_dir.resolve())), drafter_location=drafter_location)  # fmt: skip
    return Launch(kind=kind, spec=spec, command=kind.server_command(image, spec), serving=serving)


def _server(cfg: CellCfg, launch: Launch, server_log: Path) -> VllmServer:
    return VllmServer(
        launch.command,
        server_log,
        startup_timeout_s=cfg.serve.startup_timeout_s,
        shutdown_timeout_s=cfg.serve.shutdown_timeout_s,
        teardown=lambda: launch.kind.stop(launch.spec),
    )


def _start(
    cfg: CellCfg, image: ImageRecord, launch: Launch, server_log: Path, replan: Callable[[], Launch]
) -> tuple[VllmServer, Launch]:
    """Start the server and wait until healthy. A free port can be taken by another process before vLLM binds
    it: then the cell retries on a new free port; a configured port is the user's to free."""
    attempt = 1
    while True:
        server = _server(cfg, launch, server_log)
        launch.kind.before_start(image, launch.spec)
        print(f"[cell] starting vLLM on port {launch.command.port} ({' '.join(launch.command.argv[:4])} ...)",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            server.start()
            server.wait_healthy()
            return server, launch
        except PortInUse as err:
            server.stop()
            if cfg.serve.port is not None:
                raise ServerError(
                    f"serve.port {cfg.serve.port} is in use by another process; stop that process or set "
                    "serve.port=null to use a free port per cell"
                ) from err
            if attempt == PORT_ATTEMPTS:
                raise ServerError(f"{err}; gave up after {PORT_ATTEMPTS} free ports were taken before vLLM bound them") from err
            print(f"[cell] {err} (taken after it was chosen); retrying on another free port", file=sys.stderr)
            launch, attempt = replan(), attempt + 1
        except BaseException:
            server.stop()
            raise


def _measure(server: VllmServer, cfg: CellCfg, tokenizer_dir: str) -> tuple[list[WorkloadRecord], float]:
    try:
        workloads, latency_ms = asyncio.run(run_workloads(server, cfg, tokenizer_dir))
    except Exception as err:
        # A dying engine fails the request in flight before the API server exits: give it a moment to, so the
        # record names the cause (the server) rather than the symptom (the request).
        if (code := server.wait_exit(SERVER_EXIT_GRACE_S)) is not None:
            raise CellFailed(f"vLLM exited during the workloads ({describe_exit(code)}; {err})") from err
        raise
    requests = [r for w in workloads for r in w.requests]
    failed = [r for r in requests if not r.ok]
    if failed and (code := server.wait_exit(SERVER_EXIT_GRACE_S)) is not None:
        raise CellFailed(f"vLLM exited during the workloads ({describe_exit(code)}; {len(failed)} requests failed)")
    if requests and not any(r.ok for r in requests):
        raise CellFailed(f"all {len(requests)} requests failed; first error: {requests[0].error}")
    return workloads, latency_ms


def check_inputs(
    model: ModelRecord, quant: QuantRecord, image: ImageRecord, kind: ImageBackend, receipts: tuple[Path, Path, Path]
) -> None:
    """What the cell serves still matches its manifests (a truncated or edited cached file fails the cell, naming the
    file and the fix, instead of being served and measured)."""
    model_receipt, quant_receipt, image_receipt = receipts
    _require_weights(model.location, model.details.hub, f"base model {model.name}", model_receipt, "prepare_model")
    if quant.location != model.location:  # quant=none serves the base dir itself
        _require_weights(quant.location, quant.manifest.hub, f"checkpoint {quant.quant}", quant_receipt, "quantize")
    kind.check_intact(image, str(image_receipt))


def _require_weights(location: str, hub: HubSnapshot | None, what: str, receipt: Path, step: str) -> None:
    """A hub snapshot against the files its receipt recorded; anything specsweep built against its own manifest."""
    if hub is None:
        require_receipt_intact(location, what, receipt, step)
    elif problems := snapshot_problems(hub):
        raise CorruptEntry(f"{what} at {location} is not the snapshot its receipt recorded: {problems[0]}"
                           f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; delete {receipt} and "
                           f"rerun (the {step} step downloads and checks it again)")  # fmt: skip


def run_cell(
    cell: Cell,
    out_dir: Path,
    model: ModelRecord,
    quant: QuantRecord,
    image: ImageRecord,
    server_log: Path,
    receipts: tuple[Path, Path, Path] | None = None,
    preflight: PreflightRecord | None = None,
    drafter: ModelRecord | None = None,
    lm_eval_selected: bool = False,
) -> CellRecord:
    """Run the cell and write its records. A cell that fails is recorded as failed, not raised: one bad cell
    must not stop the sweep's other cells, table or reports (the sweep's last step fails on it instead)."""
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cfg = cell.config
    (out_dir / FAILURE_RECORD).unlink(missing_ok=True)
    drafter_location = drafter.location if drafter else None
    launch = plan_launch(cfg, quant.location, image, cell.sweep, cell.id, out_dir, drafter_location)
    command, serving = launch.command, launch.serving
    record = CellRecord(
        sweep=cell.sweep,
        cell_id=cell.id,
        status="ok",
        model=cfg.model.name,
        quant=cfg.quant.name,
        drafter=cfg.drafter.name,
        drafter_kind=cfg.drafter.kind,
        k=None if cfg.drafter.kind == "none" else cfg.k,
        speculative_config=cell_speculative_config(cfg),
        dtype=serving.dtype if serving else cfg.model.dtype,
        image_id=image.location,
        vllm_commit=image.vllm_commit,
        vllm_prs=image.vllm_prs,
        wna16_kernel_selected=serving.wna16_kernel if serving and uses_wna16(cfg.quant.scheme) else None,
        lm_eval_selected=lm_eval_selected,
    )

    reason = unsupported_reason(cfg, image)
    if reason:
        print(f"[cell] {cell.id}: skipped: {reason}", file=sys.stderr)
        record = record.model_copy(update={"status": "skipped", "skip_reason": reason})
        write_text(server_log, f"not started: {reason}\n")
    else:
        server: VllmServer | None = None
        # From the server's start (loading weights can be its peak) to its stop.
        peak = PeakMemory(CELL_MARKER_ENV, launch.spec.env[CELL_MARKER_ENV])
        try:
            if preflight is not None and not preflight.ok:
                raise PreflightFailed(preflight.failure())
            if receipts:
                check_inputs(model, quant, image, launch.kind, receipts)
            with peak:
                server, launch = _start(cfg, image, launch, server_log, replan=lambda: plan_launch(
                    cfg, quant.location, image, cell.sweep, cell.id, out_dir, drafter_location))  # fmt: skip
                command = launch.command
                try:
                    workloads, latency_ms = _measure(server, cfg, quant.location)
                    evals = run_evals(cfg, server.base_url, command.served_name, quant.location, out_dir,
                                      lm_eval_selected, image.offline)  # fmt: skip
                    peak.final_pss()
                finally:
                    server.stop()
            record = record.model_copy(update={
                "workloads": workloads, "server_startup_s": server.startup_s, "latency_ms": latency_ms, "evals": evals,
            })  # fmt: skip
            if evals.errors:
                # Figures whose quality checks broke are not results: the sweep fails naming this cell, and the
                # next run reruns it.
                raise CellFailed(f"{len(evals.errors)} eval(s) failed: {'; '.join(evals.errors)}")
        except Exception as err:  # noqa: BLE001 - any failure of this cell is recorded; Ctrl-C/SIGTERM are not
            traceback.print_exc()
            message = str(err).split("\n", 1)[0] if isinstance(err, (ServerError, CellFailed, CorruptEntry, PreflightFailed)) else repr(err)
            server_error, excerpt = failure_excerpt(server_log, FAILURE_LOG_LINES)
            if server_error:
                message += f"; the server's error: {server_error}"
            print(f"[cell] {cell.id}: FAILED: {message}", file=sys.stderr, flush=True)
            record = record.model_copy(
                update={
                    "status": "failed",
                    "error": message,
                    "server_log_tail": excerpt,
                    "server_startup_s": server.startup_s if server else None,
                }
            )
        record = record.model_copy(update={
            "quant_kernel": quant_kernel(server_log),
            "memory": memory_record(server_log, quant.location, drafter_location, peak if peak.samples else None),
        })  # fmt: skip

    sha, dirty = mf.git_state()
    manifest = mf.Manifest(
        specsweep_version=mf.version(),
        git_sha=sha,
        git_dirty=dirty,
        sweep=cell.sweep,
        cell_id=cell.id,
        config_hash=config_hash(cfg),
        config=canonical(cfg),
        overrides=list(cell.overrides),
        **mf.image_fields(image),
        **mf.model_fields(model),
        **mf.quant_fields(quant),
        drafter_model=getattr(cfg.drafter, "model", None),
        # The commit the prepared drafter snapshot was pinned to (else the configured revision, if any).
        drafter_revision=drafter.revision if drafter else getattr(cfg.drafter, "revision", None),
        server_argv=command.argv,
        server_env=mf.redact_env(command.env),
        server_env_forwarded=list(command.forward_env),
        hardware=mf.hardware(),
        gpu=mf.gpu(),
        host_cpu=image.host_cpu,
        serving=serving,
        seed=cfg.serve.seed,
        started_at=started_at,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    # bench.json last: it is the Snakemake target, so its presence means the cell's record is complete (ok,
    # skipped or failed; the sweep's status step moves a failed one to failure.json so the next run retries it).
    write_text(out_dir / "config.yaml", cell_yaml(cfg))
    write_json(out_dir / "manifest.json", manifest.model_dump())
    write_json(out_dir / "bench.json", record.model_dump())
    return record
