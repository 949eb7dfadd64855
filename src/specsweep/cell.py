"""Run one cell: one server lifetime, every workload against it, counters diffed around each workload."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
import time
from pathlib import Path

from specsweep.atomic import write_json, write_text
from specsweep.bench.engine import Bench, BenchSettings
from specsweep.config.compose import cell_yaml, config_hash, project_relative
from specsweep.config.grid import Cell
from specsweep.config.schema import CellCfg, DockerImage, ModelDrafter, SuffixDrafter
from specsweep.images.base import ImageRecord
from specsweep.models.prepare import ModelRecord
from specsweep.quantize.run import QuantRecord
from specsweep.records import manifest as mf
from specsweep.records.types import CellRecord, RequestRecord, WorkloadRecord
from specsweep.serve.argv import server_command
from specsweep.serve.server import VllmServer, free_port
from specsweep.serve.speculative import speculative_config_json

# Environment marker on the server and its workers, so a leaked process can be traced to its cell.
CELL_MARKER_ENV = "SPECSWEEP_CELL_DIR"


def unsupported_reason(cell: CellCfg, image: ImageRecord) -> str | None:
    """Why this platform cannot serve the cell, or None. Such cells are recorded as skipped, not failed."""
    scheme = cell.quant.scheme
    servable = cell.image.servable_quant_schemes
    if servable is not None and scheme not in servable:
        why = cell.image.unservable_reasons.get(scheme, f"image {image.name} serves only {', '.join(servable)}")
        return f"quant {cell.quant.name} ({scheme}) cannot be served here: {why}"
    drafter = cell.drafter
    if image.offline and isinstance(drafter, ModelDrafter):
        return (
            f"drafter {drafter.name} needs hub weights ({drafter.model}); image {image.name} is offline "
            "and the embedded path never downloads weights"
        )
    if isinstance(drafter, SuffixDrafter) and not image.has_package(drafter.requires_package):
        return f"drafter {drafter.name} needs {drafter.requires_package} in image {image.name}; add it to the image"
    return None


def quant_kernel(server_log: Path) -> str | None:
    found = re.search(r"Using (\w+) for (?:mixed-precision linear|\w+ linear)", server_log.read_text(errors="replace"))
    return found.group(1) if found else None


async def _run_workloads(server: VllmServer, cell: CellCfg) -> tuple[list[WorkloadRecord], float]:
    settings = BenchSettings(
        base_url=f"{server.base_url}/v1",
        model=server.command.served_name,
        runs=cell.bench.runs,
        concurrency=sorted({c for w in cell.bench.workloads for c in w.concurrency}),
        latency_mode=cell.bench.latency_mode,
        endpoint=cell.bench.endpoint,
        exact_tg=False,
        request_timeout_s=cell.bench.request_timeout_s,
    )
    bench = Bench(settings)
    records = []
    async with bench.session() as session:
        await bench.start(session)
        for workload in cell.bench.workloads:
            prompt_path = project_relative(workload.prompt_file)
            prompt = prompt_path.read_text()
            for concurrency in workload.concurrency:
                row, requests = await bench.task(session, workload.name, prompt, workload.max_tokens, concurrency)
                records.append(
                    WorkloadRecord(
                        workload=workload.name,
                        concurrency=concurrency,
                        prompt_file=workload.prompt_file,
                        prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
                        max_tokens=workload.max_tokens,
                        row=row,
                        requests=[
                            RequestRecord.from_timing(index // concurrency, timing)
                            for index, timing in enumerate(requests)
                        ],
                    )
                )
    return records, bench.latency_s * 1000


def run_cell(
    cell: Cell, out_dir: Path, model: ModelRecord, quant: QuantRecord, image: ImageRecord, server_log: Path
) -> CellRecord:
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cfg = cell.config
    record = CellRecord(
        sweep=cell.sweep,
        cell_id=cell.id,
        status="ok",
        model=cfg.model.name,
        quant=cfg.quant.name,
        drafter=cfg.drafter.name,
        drafter_kind=cfg.drafter.kind,
        k=None if cfg.drafter.kind == "none" else cfg.k,
        speculative_config=speculative_config_json(cfg.drafter, cfg.k),
    )
    port = cfg.serve.port or free_port(cfg.serve.host)
    container = f"specsweep-{cell.sweep}-{cell.id}" if isinstance(cfg.image, DockerImage) else ""
    command = server_command(cfg, quant.location, port, image_root=Path(image.location), container_name=container)
    command.env[CELL_MARKER_ENV] = str(out_dir.resolve())

    reason = unsupported_reason(cfg, image)
    if reason:
        print(f"[cell] {cell.id}: skipped: {reason}", file=sys.stderr)
        record = record.model_copy(update={"status": "skipped", "skip_reason": reason})
        write_text(server_log, f"not started: {reason}\n")
    else:
        print(f"[cell] {cell.id}: starting vLLM ({' '.join(command.argv[:4])} ...)", file=sys.stderr, flush=True)
        with VllmServer(
            command,
            server_log,
            startup_timeout_s=cfg.serve.startup_timeout_s,
            shutdown_timeout_s=cfg.serve.shutdown_timeout_s,
            stop_command=["docker", "stop", container] if container else None,
        ) as server:
            workloads, latency_ms = asyncio.run(_run_workloads(server, cfg))
        record = record.model_copy(
            update={
                "workloads": workloads,
                "server_startup_s": server.startup_s,
                "latency_ms": latency_ms,
                "quant_kernel": quant_kernel(server_log),
            }
        )

    sha, dirty = mf.git_state()
    manifest = mf.Manifest(
        specsweep_version=mf.version(),
        git_sha=sha,
        git_dirty=dirty,
        sweep=cell.sweep,
        cell_id=cell.id,
        config_hash=config_hash(cfg),
        overrides=list(cell.overrides),
        **mf.image_fields(image),
        **mf.model_fields(model),
        **mf.quant_fields(quant),
        drafter_model=getattr(cfg.drafter, "model", None),
        drafter_revision=getattr(cfg.drafter, "revision", None),
        server_argv=command.argv,
        server_env=mf.redact_env(command.env),
        hardware=mf.hardware(),
        seed=cfg.serve.seed,
        started_at=started_at,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    # bench.json last: it is the Snakemake target, so its presence means the cell is complete.
    write_text(out_dir / "config.yaml", cell_yaml(cfg))
    write_json(out_dir / "manifest.json", manifest.model_dump())
    write_json(out_dir / "bench.json", record.model_dump())
    return record
