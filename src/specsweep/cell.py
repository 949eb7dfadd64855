"""Run one cell: one server lifetime, every workload against it, counters diffed around each workload."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import httpx

from specsweep.atomic import write_json, write_text
from specsweep.bench.client import stream_completion
from specsweep.config.compose import cell_yaml, config_hash, project_relative
from specsweep.config.grid import Cell
from specsweep.config.schema import CellCfg, DockerImage, ModelDrafter, SuffixDrafter
from specsweep.images.base import ImageRecord
from specsweep.metrics.specdecode import SpecSnapshot, diff, parse
from specsweep.models.prepare import ModelRecord
from specsweep.results import manifest as mf
from specsweep.results.records import CellRecord, RequestRecord, WorkloadRecord
from specsweep.serve.argv import server_command
from specsweep.serve.server import VllmServer, free_port
from specsweep.serve.speculative import speculative_config_json

# Environment marker on the server and its workers, so a leaked process can be traced to its cell.
CELL_MARKER_ENV = "SPECSWEEP_CELL_DIR"


def unsupported_reason(cell: CellCfg, image: ImageRecord) -> str | None:
    """Why this platform cannot serve the cell, or None. Such cells are recorded as skipped, not failed."""
    drafter = cell.drafter
    if image.offline and isinstance(drafter, ModelDrafter):
        return (
            f"drafter {drafter.name} needs hub weights ({drafter.model}); image {image.name} is offline "
            "and the embedded path never downloads weights"
        )
    if isinstance(drafter, SuffixDrafter) and not image.has_package(drafter.requires_package):
        return f"drafter {drafter.name} needs {drafter.requires_package} in image {image.name}; add it to the image"
    return None


def scrape(client: httpx.Client, base_url: str) -> SpecSnapshot:
    response = client.get(f"{base_url}/metrics", timeout=30)
    response.raise_for_status()
    return parse(response.text)


def run_workloads(client: httpx.Client, server: VllmServer, cell: CellCfg) -> list[WorkloadRecord]:
    served = server.command.served_name
    records = []
    # One short request first, outside every measured window: first-request overheads are not the workload's.
    stream_completion(client, server.base_url, served, "Hello", 4, cell.bench.request_timeout_s)
    for workload in cell.bench.workloads:
        prompt_path = project_relative(workload.prompt_file)
        prompt = prompt_path.read_text()
        started = time.monotonic()
        before = scrape(client, server.base_url)
        requests = []
        for repeat in range(cell.bench.repeats):
            result = stream_completion(
                client, server.base_url, served, prompt, workload.max_tokens, cell.bench.request_timeout_s
            )
            requests.append(RequestRecord(repeat=repeat, **result.model_dump()))
            rate = f"{result.tg_tokens_per_s:.1f} tok/s" if result.tg_tokens_per_s else result.error
            print(
                f"[cell] {workload.name} {repeat + 1}/{cell.bench.repeats}: "
                f"{result.completion_tokens} tokens, {rate}",
                file=sys.stderr,
                flush=True,
            )
        after = scrape(client, server.base_url)
        records.append(
            WorkloadRecord(
                workload=workload.name,
                prompt_file=workload.prompt_file,
                prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
                max_tokens=workload.max_tokens,
                requests=requests,
                spec=diff(before, after),
                wall_s=round(time.monotonic() - started, 3),
            )
        )
    return records


def run_cell(cell: Cell, out_dir: Path, model: ModelRecord, image: ImageRecord, server_log: Path) -> CellRecord:
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
    command = server_command(
        cfg, model.location, port, image_root=Path(image.location), container_name=container
    )
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
        ) as server, httpx.Client() as client:
            workloads = run_workloads(client, server, cfg)
        record = record.model_copy(update={"workloads": workloads, "server_startup_s": server.startup_s})

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
