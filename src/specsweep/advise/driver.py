"""`sweep.strategy=adaptive`: which cells a sweep plans, round by round, and the driver that runs the rounds.

The state is `results/<sweep>/adaptive.json`: the cells planned so far and each group's search. The plan
(specsweep.workflow_plan) reads it, so plain `snakemake` always runs and reports exactly the planned cells: before
any round, the first round (every no-drafter cell, every cell of a parallel drafter, which has no prediction across
k, and each chain-drafter group's k_max, plus its k = 1 where no no-drafter cell anchors the step cost).
`specsweep adapt` runs the rounds: after each Snakemake run it reads the table, asks
specsweep.advise.adaptive.search what to measure next, adds those cells, and runs again until every group's best
k is confirmed; then it serves each recommended batch-size schedule as one more cell (closing the loop: the advice
then holds its predicted vs measured t/s).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from specsweep.advise.adaptive import predicted_objective, search
from specsweep.advise.advice import Advice, advise_sweep_dir, load_traces
from specsweep.atomic import write_json
from specsweep.config.grid import Cell, cell_from, max_num_seqs
from specsweep.config.schema.drafter import drafts_in_chain
from specsweep.records.adaptive import AdaptiveState, GroupSearch
from specsweep.records.base import read_record

STATE = "adaptive.json"


def _group_key(cell: Cell) -> str:
    """Everything but k: the cells one search chooses among."""
    return " ".join(o for o in cell.overrides if not o.startswith("k="))


def chain_groups(cells: list[Cell]) -> dict[str, dict[int, Cell]]:
    groups: dict[str, dict[int, Cell]] = {}
    for cell in cells:
        if drafts_in_chain(cell.config.drafter.kind) and cell.config.k_schedule is None:
            groups.setdefault(_group_key(cell), {})[cell.config.k] = cell
    return groups


def baseline_of(cells: list[Cell], cell: Cell) -> Cell | None:
    """The no-drafter cell of the same model and quant (the advisor's k = 0)."""
    cfg = cell.config
    return next((c for c in cells if c.config.drafter.kind == "none" and c.config.model.name == cfg.model.name
                 and c.config.quant.name == cfg.quant.name), None)  # fmt: skip


def first_round(cells: list[Cell]) -> list[str]:
    """Every cell outside a chain search (no-drafter cells, parallel drafters, schedules), and each chain group's
    k_max; its k = 1 too where the group has no no-drafter cell to anchor the step-cost line."""
    chained = {c.id for group in chain_groups(cells).values() for c in group.values()}
    picked = [c.id for c in cells if c.id not in chained]
    for group in chain_groups(cells).values():
        anchored = baseline_of(cells, next(iter(group.values()))) is not None
        picked += [group[k].id for k in sorted({max(group)} | (set() if anchored else {min(group)}))]
    return sorted(set(picked))


def state_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / STATE


def planned(cells: list[Cell], sweep_dir: Path) -> list[Cell]:
    """The cells an adaptive sweep plans now: the state's (with its schedule cells), else the first round."""
    path = state_path(sweep_dir)
    if not path.is_file():
        wanted = set(first_round(cells))
        return [cell for cell in cells if cell.id in wanted]
    state = read_record(AdaptiveState, path)
    return [cell for cell in cells if cell.id in set(state.cells)] + [cell_from(o) for o in state.schedule_cells]


def schedule_overrides(advice: Advice, cells: list[Cell]) -> list[list[str]]:
    """A cell per distinct recommended batch-size schedule: its k_max cell with k and k_schedule replaced."""
    by_id = {cell.id: cell for cell in cells}
    out: list[list[str]] = []
    for recommendation in advice.recommendations:
        config = recommendation.speculative_config
        schedule = config.get("num_speculative_tokens_per_batch_size")
        base = by_id.get(recommendation.k_max_cell)
        if not schedule or base is None:
            continue
        overrides = [o for o in base.overrides if not o.startswith(("k=", "k_schedule="))]
        overrides += [f"k={config['num_speculative_tokens']}", f"k_schedule={json.dumps(schedule, separators=(',', ':'))}"]
        if overrides not in out:
            out.append(overrides)
    return out


def adapt(cells: list[Cell], sweep_dir: Path, run_snakemake: Callable[[], None]) -> AdaptiveState:
    """Run the rounds; `run_snakemake` runs the workflow (its plan reads the state written before each call)."""
    sweep_dir = Path(sweep_dir)
    path = state_path(sweep_dir)
    state = (read_record(AdaptiveState, path) if path.is_file()
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

        def predict(table: pd.DataFrame, k_max: int = max(group)) -> dict[int, float]:
            # The k_max cell's per-request traces: its acceptance replayed at every k.
            return predicted_objective(table, k_max, load_traces(sweep_dir, table["cell_id"].dropna().unique())[1])

        # The search's k are draft lengths 1..k_max; a sweep without some k cannot measure them.
        result = search(lambda wanted: measure([k for k in wanted if k in by_k]), k_max=max(group), predict=predict)
        state.groups[key] = GroupSearch(measured=result.measured, predicted=result.predicted,
                                        predicted_before_measuring=result.predicted_before_measuring,
                                        order=result.order, best_k=result.best_k)  # fmt: skip
        print(f"[adapt] {key}: best k {result.best_k} after measuring k in {result.order}", file=sys.stderr, flush=True)
    served = schedule_overrides(advise_sweep_dir(sweep_dir, max_num_seqs(cells)), cells)
    if new := [o for o in served if o not in state.schedule_cells]:
        state.schedule_cells += new
        write_json(path, state.model_dump(mode="json"))
        print(f"[adapt] serving the recommended schedules: {[o[-1] for o in new]}", file=sys.stderr, flush=True)
        run_snakemake()
    state.done = True
    write_json(path, state.model_dump(mode="json"))
    return state


def describe(state: AdaptiveState) -> str:
    return json.dumps({key: {"best_k": g.best_k, "measured": g.order} for key, g in state.groups.items()})
