"""Cells of a sweep measured by an earlier run: what a narrowed run's table keeps beside the cells it measured.

A narrowed run (`--config overrides="quant=bf16 drafter=ngram k=2,4"`) plans its own cells only; its table holds
every measured cell of the sweep on disk, the narrowed ones fresh, so a narrowed run after a full one never leaves a
2-cell table and report. The table's `this_run` column says which cells the run measured.
"""

from __future__ import annotations

from pathlib import Path

from specsweep.records.base import RecordError, read_record
from specsweep.records.manifest import Manifest
from specsweep.records.quality import QualityRecord
from specsweep.records.quant import QuantRecord


def earlier_cells(sweep_dir: Path, planned: list[Path]) -> dict[Path, Manifest]:
    """Cell dirs under `sweep_dir` with a readable record and manifest of this sweep that the run did not plan,
    with their manifests."""
    planned_names = {Path(path).name for path in planned}
    found = {}
    for bench in sorted(Path(sweep_dir).glob("*/bench.json")):
        cell_dir = bench.parent
        if cell_dir.name in planned_names:
            continue
        try:
            manifest = read_record(Manifest, cell_dir / "manifest.json")
        except RecordError:
            continue  # a cell dir a killed run left half-written: not a measured cell
        if manifest.sweep == Path(sweep_dir).name:
            found[cell_dir] = manifest
    return found


def quality_records_of(manifests: list[Manifest], results_dir: Path, known: list[Path]) -> list[Path]:
    """The quality records (results/_quality/<key>.json) of the quants the cells served, found through the quant
    record of the same key whose checkpoint is the one the cell's manifest names; quants `known` already has are
    left out."""
    have = {(r.model, r.quant) for r in (read_record(QualityRecord, p) for p in known)}
    served = {}
    for manifest in manifests:
        if (manifest.model_name, manifest.quant_name) not in have and manifest.quant_location:
            served[manifest.quant_location] = (manifest.model_name, manifest.quant_name)
    records = []
    for quant_path in sorted((results_dir / "_quants").glob("*.json")):
        quality = results_dir / "_quality" / quant_path.name
        if not quality.is_file():
            continue
        try:
            quant = read_record(QuantRecord, quant_path)
        except RecordError:
            continue
        if served.get(quant.location) == (quant.model, quant.quant):
            records.append(quality)
            del served[quant.location]
    return records

