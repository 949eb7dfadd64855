"""Expand a sweep into cells with Hydra's own multirun semantics.

`k=1,3,7`, `k=range(1,8)` and `drafter=choice(none,ngram)` mean exactly what they mean under
`python app.py --multirun ...`, because the same parser and the same BasicSweeper split them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from pydantic import ValidationError

from specsweep.config.compose import Composed, ConfigError, compose_cell, compose_raw, config_hash
from specsweep.config.schema import CellCfg, QualityCfg, SweepCfg
from specsweep.config.secrets import redact_overrides, refusal, scrub, secret_override_problems

# progress(description, total) -> a context giving advance(item) (specsweep.report.progress.progress)
Progress = Callable[[str, int], AbstractContextManager[Callable[[str], None]]]


@dataclass(frozen=True)
class Cell:
    id: str
    sweep: str
    # Sorted override list that composes exactly this cell (recorded; jobs get the resolved config instead).
    overrides: tuple[str, ...]
    config: CellCfg
    config_hash: str
    # The quality settings of its quant's quality job (None inside a cell job, which does not use them).
    quality: QualityCfg | None = None


def max_num_seqs(cells: list[Cell]) -> int | None:
    """The largest serve.max_num_seqs of these cells (None: vLLM's default): where a batch-size schedule ends."""
    return max((c.config.serve.max_num_seqs or 0 for c in cells), default=0) or None


def split_overrides(text: str | list[str] | None) -> list[str]:
    """`--config overrides="a=1 b=2"` is shell-split; a YAML list (a config file, `specsweep run`) is taken
    item by item, verbatim, so values with spaces, quotes or brackets need no quoting."""
    if text is None:
        return []
    if isinstance(text, list):
        return [str(item) for item in text]
    try:
        return shlex.split(text)
    except ValueError as err:
        raise ConfigError(f"cannot split overrides {text!r}: {err}; quote values with spaces") from err


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep_grids(sweep_override: str) -> list[dict[str, str]]:
    raw, _ = compose_raw([sweep_override])
    try:
        return SweepCfg.model_validate(raw["sweep"]).grids
    except ValidationError as err:
        raise ConfigError(f"invalid sweep in {sweep_override}: {err}") from err


def expand(user_overrides: list[str], sweep_name: str | None = None, progress: Progress | None = None) -> list[Cell]:
    """All cells of a sweep, narrowed or changed by the user's Hydra overrides.

    The sweep's own axes come first; a user override of the same key replaces that axis
    (`k=3` narrows, `k=1,3,7` re-sweeps), any other user override applies to every cell. `progress(description,
    total)` (specsweep.report.progress) shows the composing, a tenth of a second or more per combination.
    """
    if problems := secret_override_problems(user_overrides):
        raise ConfigError(refusal(problems))
    chosen = [o.split("=", 1)[1] for o in user_overrides if _key(o) == "sweep"]
    sweep_choice = chosen[-1] if chosen else sweep_name or compose_raw([])[1]["sweep"]
    sweep_override = f"sweep={sweep_choice}"
    # The sweep's axes only: its cells are validated below, with the user's overrides (which may supply what the
    # sweep alone lacks, e.g. the cluster nodes of sweep=spark_cluster).
    grids = sweep_grids(sweep_override)

    user_keys = {_key(o) for o in user_overrides}
    combinations = []
    for grid in grids:
        axes = [f"{key}={value}" for key, value in grid.items() if key not in user_keys]
        arguments = axes + [o for o in user_overrides if _key(o) != "sweep"]
        try:
            parsed = OverridesParser.create().parse_overrides(arguments)
        except HydraException as err:
            shown = " ".join(redact_overrides(arguments))
            raise ConfigError(scrub(f"cannot parse overrides {shown}: {err}")) from err
        combinations += BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]

    # Grids may overlap (and user overrides can make them identical): a cell is kept once, by config hash.
    cells: dict[str, Cell] = {}
    shown = progress(f"composing {sweep_choice}", len(combinations)) if progress else nullcontext(lambda item: None)
    with shown as advance:
        for combination in combinations:
            cell = cell_from([sweep_override, *combination])
            cells.setdefault(cell.config_hash, cell)
            advance(cell.id)
    if not cells:
        raise ConfigError(f"sweep {sweep_choice} expands to no cells; check its params (conf/sweep/{sweep_choice}.yaml)")
    check_k_has_a_drafter(user_overrides, [cell.config for cell in cells.values()])
    expanded = _disambiguate(list(cells.values()))
    check_one_chat_template_setting(grids, user_keys, expanded)
    return expanded


def cell_from(overrides: list[str]) -> Cell:
    """One cell from its full overrides (the sweep's included)."""
    composed = compose_cell(overrides)
    return Cell(
        id=readable_id(composed),
        sweep=composed.sweep.name,
        overrides=tuple(sorted(o for o in overrides if not _ignored_for(composed, o))),
        config=composed.cell,
        config_hash=config_hash(composed.cell),
        quality=composed.quality,
    )


def check_k_has_a_drafter(user_overrides: list[str], configs: list[CellCfg]) -> None:
    """`drafter=none k=7` is a mistake, not a request: k would be silently ignored."""
    given = [o for o in user_overrides if _key(o) == "k"]
    if given and all(cfg.drafter.kind == "none" for cfg in configs):
        raise ConfigError(
            f"{given[-1]} sets the draft length, but no cell has a drafter (drafter=none drafts nothing); "
            f"pick a drafter (e.g. drafter=ngram {given[-1]}) or drop {given[-1]}"
        )


CHAT_TEMPLATE_KEY = "serve.default_chat_template_kwargs"


def check_one_chat_template_setting(grids: list[dict[str, str]], user_keys: set[str], cells: list[Cell]) -> None:
    """Thinking on for some cells and off for others makes every other axis vary the output distribution too (a
    quant that thinks less decodes faster and scores differently): one setting per sweep, unless it is an axis."""
    if CHAT_TEMPLATE_KEY in user_keys or any(CHAT_TEMPLATE_KEY in grid for grid in grids):
        return
    by_setting: dict[str, list[str]] = {}
    for cell in cells:
        setting = json.dumps(cell.config.serve.default_chat_template_kwargs, sort_keys=True)
        by_setting.setdefault(setting, []).append(cell.id)
    if len(by_setting) > 1:
        shown = "; ".join(f"{setting}: {len(ids)} cells (e.g. {ids[0]})" for setting, ids in sorted(by_setting.items()))
        raise ConfigError(
            f"the cells of sweep {cells[0].sweep} differ in {CHAT_TEMPLATE_KEY} ({shown}), so the other axes would "
            f"also change what the model generates; give every cell one setting (e.g. {CHAT_TEMPLATE_KEY}="
            "{enable_thinking:true}), or sweep it as an axis of its own in sweep.params"
        )


def _ignored_for(composed: Composed, override: str) -> bool:
    """`k` means nothing without a drafter: leaving it out merges none-cells across k.

    Report settings are per sweep: kept out of cell overrides so changing them reruns no cell job.
    """
    if _key(override).split(".")[0] == "report":
        return True
    return composed.cell.drafter.kind == "none" and _key(override) == "k"


def readable_id(composed: Composed) -> str:
    cell = composed.cell
    parts = [cell.model.name, cell.quant.name, cell.drafter.name]
    if cell.drafter.kind != "none":
        parts.append(f"k{cell.k}")
    if cell.k_schedule:
        parts.append("sched" + "_".join(".".join(map(str, entry)) for entry in cell.k_schedule))
    if cell.adaptive_verification:
        parts.append("adaptive")
    return "-".join(parts)


def _disambiguate(cells: list[Cell]) -> list[Cell]:
    """Cells that differ only outside model/quant/drafter/k (e.g. serve.max_num_seqs=1,4) get a hash suffix."""
    by_id: dict[str, list[Cell]] = {}
    for cell in cells:
        by_id.setdefault(cell.id, []).append(cell)
    result = []
    for cell_id, group in by_id.items():
        for cell in group:
            if len(group) > 1:
                suffix = hashlib.sha256(" ".join(cell.overrides).encode()).hexdigest()[:8]
                cell = dataclasses.replace(cell, id=cell_id + "-" + suffix)
            result.append(cell)
    return sorted(result, key=lambda c: c.id)
