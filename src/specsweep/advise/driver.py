"""`sweep.strategy=adaptive`: which cells a sweep plans, round by round, and the driver that runs the rounds.

The state is `results/<sweep>/adaptive.json`: the cells planned so far and each group's search. The plan
(specsweep.workflow_plan) reads it, so plain `snakemake` always runs and reports exactly the planned cells: before
any round, the first round (every no-drafter cell, k = 1 and k_max of each chain-drafter group, every cell of a
parallel drafter, which has no prediction across k). `specsweep adapt` runs the rounds: after each Snakemake run
it reads the table, asks specsweep.advise.adaptive.search what to measure next, adds those cells, and runs again
until every group's best k is confirmed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
from pydantic import BaseModel

from specsweep.advise.acceptance import CHAIN_DRAFTERS
from specsweep.advise.adaptive import search
from specsweep.atomic import write_json
from specsweep.config.grid import Cell

STATE = "adaptive.json"


class GroupSearch(BaseModel):
    measured: dict[int, float] = {}
    predicted: dict[int, float] = {}
    order: list[int] = []
    best_k: int | None = None


class AdaptiveState(BaseModel):
    sweep: str
    cells: list[str]
    groups: dict[str, GroupSearch] = {}
    done: bool = False


def _group_key(cell: Cell) -> str:
    """Everything but k: the cells one search chooses among."""
    return " ".join(o for o in cell.overrides if not o.startswith("k="))


def chain_groups(cells: list[Cell]) -> dict[str, dict[int, Cell]]:
    groups: dict[str, dict[int, Cell]] = {}
    for cell in cells:
        if cell.config.drafter.kind in CHAIN_DRAFTERS and cell.config.k_schedule is None:
            groups.setdefault(_group_key(cell), {})[cell.config.k] = cell
    return groups


def baseline_of(cells: list[Cell], cell: Cell) -> Cell | None:
    """The no-drafter cell of the same model and quant (the advisor's k = 0)."""
    cfg = cell.config
    return next((c for c in cells if c.config.drafter.kind == "none" and c.config.model.name == cfg.model.name
                 and c.config.quant.name == cfg.quant.name), None)  # fmt: skip


def first_round(cells: list[Cell]) -> list[str]:
    chained = {c.id for group in chain_groups(cells).values() for c in group.values()}
    picked = [c.id for c in cells if c.id not in chained]  # baselines, parallel drafters, schedules
    for group in chain_groups(cells).values():
        picked += [group[k].id for k in sorted({min(group), max(group)})]
    return sorted(set(picked))


def state_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / STATE


def planned(cells: list[Cell], sweep_dir: Path) -> list[Cell]:
    """The cells an adaptive sweep plans now: the state's, else the first round."""
    path = state_path(sweep_dir)
    wanted = set(AdaptiveState.model_validate_json(path.read_text()).cells) if path.is_file() else set(first_round(cells))
    return [cell for cell in cells if cell.id in wanted]


def adapt(cells: list[Cell], sweep_dir: Path, run_snakemake: Callable[[], None]) -> AdaptiveState:
    """Run the rounds; `run_snakemake` runs the workflow (its plan reads the state written before each call)."""
    sweep_dir = Path(sweep_dir)
    path = state_path(sweep_dir)
    state = (AdaptiveState.model_validate_json(path.read_text()) if path.is_file()
             else AdaptiveState(sweep=cells[0].sweep, cells=first_round(cells)))  # fmt: skip
    write_json(path, state.model_dump(mode="json"))
    run_snakemake()
    for key, group in chain_groups(cells).items():
        baseline = baseline_of(cells, next(iter(group.values())))
        by_k = {k: cell for k, cell in group.items()} | ({0: baseline} if baseline else {})

        def measure(ks: list[int]) -> dict[int, pd.DataFrame]:
            missing = [by_k[k].id for k in ks if k in by_k and by_k[k].id not in state.cells]
            if missing:
                state.cells = sorted({*state.cells, *missing})
                write_json(path, state.model_dump(mode="json"))
                print(f"[adapt] {key}: measuring k in {ks}", file=sys.stderr, flush=True)
                run_snakemake()
            table = pd.read_csv(sweep_dir / "table.csv")
            ok = table[(table["status"] == "ok") & table["workload"].notna()]
            return {k: ok[ok["cell_id"] == by_k[k].id] for k in ks if k in by_k}

        ks = sorted(k for k in group)
        # The search's k are draft lengths 1..k_max; a sweep without some k cannot measure them.
        result = search(lambda wanted: measure([k for k in wanted if k in by_k]), k_max=max(ks))
        state.groups[key] = GroupSearch(measured=result.measured, predicted=result.predicted, order=result.order,
                                        best_k=result.best_k)  # fmt: skip
        print(f"[adapt] {key}: best k {result.best_k} after measuring k in {result.order}", file=sys.stderr, flush=True)
    state.done = True
    write_json(path, state.model_dump(mode="json"))
    return state


def describe(state: AdaptiveState) -> str:
    return json.dumps({key: {"best_k": g.best_k, "measured": g.order} for key, g in state.groups.items()})
