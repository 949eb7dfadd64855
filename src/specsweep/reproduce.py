"""`specsweep reproduce <cell dir | W&B run id | cell id>`: run a recorded cell again, exactly as recorded.

The cell's recorded config (config.yaml, what it ran) is used as is, never recomposed. What it ran on is rebuilt
the way the workflow builds it (model, quant, image and its preflight, the drafter's weights), and every fact the
manifest recorded about it is checked against what is here now, one warning per difference: code (specsweep
version, git commit, uncommitted changes), config (the recorded overrides composed with today's conf/), image (id,
vLLM version, commit, applied PRs), weights (model and quant files' sha256, recipe, drafter revision) and hardware
(CPU model and flags, cores, memory, GPU). Then the cell runs into results/_reproduce/<sweep>/<cell>/, and old
and new are printed side by side: greedy tokens (requests at concurrency 1 and the lossless prompts) and every
metric with the run-to-run noise test of `specsweep compare`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from specsweep.config.compose import ConfigError, compose_cell, config_hash
from specsweep.config.grid import Cell
from specsweep.config.schema import CellCfg, ModelDrafter
from specsweep.records import manifest as mf
from specsweep.records.base import read_record
from specsweep.records.cell import CellRecord
from specsweep.report.compare import flatten

# Manifest fields that say what produced the numbers, by what they are about (times, ports, argv are not facts of
# that kind: they differ on every run).
CHECKED = {
    "code": ("specsweep_version", "git_sha", "git_dirty"),
    "config": ("config_hash",),
    "image": ("image_location", "vllm_version", "vllm_commit", "vllm_prs"),
    "weights": ("model_revision", "model_source_sha256", "model_weights_sha256", "quant_revision", "quant_recipe_sha256",
                "quant_files_sha256", "drafter_revision"),
    "hardware": ("hardware", "host_cpu"),
}  # fmt: skip


def locate(target: str, results: Path = Path("results")) -> Path:
    """A cell dir, a W&B run id of a cell, or a cell id under results/<sweep>/."""
    path = Path(target)
    if (path / "manifest.json").is_file():
        return path
    from specsweep.report.wandb_runs import run_id

    found = [d for d in results.glob("*/*") if (d / "manifest.json").is_file()
             and (d.name == target or run_id(d.parent.name, d.name) == target)]  # fmt: skip
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(f"{target} names {len(found)} cells ({', '.join(map(str, found))}); pass the cell dir instead")
    raise ValueError(f"{target} is no cell dir (with manifest.json), W&B run id or cell id under {results}/*/")


def differences(recorded: dict, now: dict) -> list[str]:
    """One line per checked fact that differs (dict-valued facts per key: which weight file, which CPU flag)."""
    lines = []
    for what, fields in CHECKED.items():
        for field in fields:
            old, new = flatten(recorded.get(field), field), flatten(now.get(field), field)
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    lines.append(f"{what}: {key} recorded {old.get(key)!r}, now {new.get(key)!r}")
    return lines


@dataclass
class Prepared:
    cell: Cell
    records: tuple
    facts: dict


def prepare(cell_dir: Path) -> Prepared:
    """The recorded config and what it runs on, built now; `facts`: the manifest fields those give."""
    from specsweep.images.base import backend_of, build_image
    from specsweep.images.preflight import needs_of, planned_argvs, run_preflight
    from specsweep.models.prepare import hub_record, prepare_model
    from specsweep.quantize.run import quantize

    manifest = read_record(mf.Manifest, cell_dir / "manifest.json").model_dump(mode="json")
    cfg = CellCfg.model_validate(yaml.safe_load((cell_dir / "config.yaml").read_text()))
    print(f"[reproduce] {manifest['cell_id']}: preparing the model, quant, image and drafter it ran on", file=sys.stderr)
    model = prepare_model(cfg.model)
    quant = quantize(cfg.quant, cfg.model, model)
    image = build_image(cfg.image)
    preflight = run_preflight(backend_of(cfg.image), image, needs_of([cfg]), planned_argvs([cfg], [manifest["cell_id"]]))
    drafter = None
    if isinstance(cfg.drafter, ModelDrafter) and not image.offline:
        drafter = hub_record(cfg.drafter.name, cfg.drafter.model, cfg.drafter.revision or "main")
    sha, dirty = mf.git_state()
    try:
        today = config_hash(compose_cell(manifest["overrides"]).cell)
    except ConfigError as err:
        today = f"does not compose: {err}"
    facts = {
        "specsweep_version": mf.version(), "git_sha": sha, "git_dirty": dirty, "config_hash": today,
        **mf.image_fields(image), **mf.model_fields(model), **mf.quant_fields(quant),
        "drafter_revision": drafter.revision if drafter else getattr(cfg.drafter, "revision", None),
        "hardware": mf.hardware(), "host_cpu": image.host_cpu.model_dump() if image.host_cpu else None,
    }  # fmt: skip
    cell = Cell(id=manifest["cell_id"], sweep=manifest["sweep"], overrides=tuple(manifest["overrides"]), config=cfg,
                config_hash=config_hash(cfg))  # fmt: skip
    return Prepared(cell=cell, records=(model, quant, image, preflight, drafter), facts=facts)


def greedy_identity(old: CellRecord, new: CellRecord) -> list[str]:
    """Greedy tokens old vs new: every request at concurrency 1 (batching can change floating point at higher
    concurrency) and the lossless prompts' outputs."""
    lines = []
    new_rows = {(w.workload, w.concurrency): w for w in new.workloads}
    for workload in old.workloads:
        other = new_rows.get((workload.workload, workload.concurrency))
        if workload.concurrency != 1 or other is None:
            continue
        pairs = [(a.token_ids, b.token_ids) for a, b in zip(workload.requests, other.requests) if a.token_ids and b.token_ids]
        same = sum(a == b for a, b in pairs)
        lines.append(f"{workload.workload} c1: {same} of {len(pairs)} requests' greedy tokens identical")
    old_greedy = old.evals.greedy if old.evals else None
    new_greedy = new.evals.greedy if new.evals else None
    if old_greedy and new_greedy:
        old_ids = {o.id: o.token_ids for o in old_greedy.outputs}
        same = sum(old_ids.get(o.id) == o.token_ids for o in new_greedy.outputs)
        lines.append(f"lossless prompts: {same} of {len(new_greedy.outputs)} greedy outputs identical")
    return lines


@dataclass
class Reproduction:
    recorded: Path
    rerun: Path | None
    warnings: list[str]
    greedy: list[str]
    report: str


def reproduce(target: str, results: Path = Path("results"), rerun: bool = True) -> Reproduction:
    from specsweep.cell import run_cell
    from specsweep.report.compare import compare, markdown

    cell_dir = locate(target, results)
    recorded = read_record(mf.Manifest, cell_dir / "manifest.json").model_dump(mode="json")
    prepared = prepare(cell_dir)
    warnings = differences(recorded, prepared.facts)
    for line in warnings:
        print(f"[reproduce] WARNING {line}", file=sys.stderr)
    if not rerun:
        return Reproduction(cell_dir, None, warnings, [], "")
    model, quant, image, preflight, drafter = prepared.records
    old = read_record(CellRecord, cell_dir / "bench.json")
    out_dir = results / "_reproduce" / prepared.cell.sweep / prepared.cell.id
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"[reproduce] running {prepared.cell.id} into {out_dir}", file=sys.stderr, flush=True)
    new = run_cell(prepared.cell, out_dir, model, quant, image, out_dir / "server.log", preflight=preflight,
                   drafter=drafter, lm_eval_selected=old.lm_eval_selected)  # fmt: skip
    if new.status != "ok":
        raise RuntimeError(f"the rerun {new.status}: {new.error or new.skip_reason}; see {out_dir / 'server.log'}")
    greedy = greedy_identity(old, new)
    # compare() aligns by config: the recorded and the rerun cell have the same one.
    comparison = compare(cell_dir.parent, out_dir.parent, only=(cell_dir.name,))
    return Reproduction(cell_dir, out_dir, warnings, greedy, markdown(comparison))
