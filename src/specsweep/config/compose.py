"""Compose one cell from conf/ with Hydra and validate it against the typed schema."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import typing
from dataclasses import dataclass

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from specsweep.config.schema import CellCfg, QualityCfg, ReportCfg, SweepCfg
from specsweep.config.secrets import redact_overrides, refusal, scrub, secret_override_problems, secret_tree_problems
from specsweep.paths import conf_dir
from specsweep.suggest import did_you_mean


class ConfigError(ValueError):
    """A config or override problem, with a message that says how to fix it."""


@dataclass(frozen=True)
class Composed:
    cell: CellCfg
    sweep: SweepCfg
    # Per quant, not per cell: kept out of the cell so changing it reruns quality, never the cells.
    quality: QualityCfg
    # Group -> chosen option name (e.g. {"drafter": "ngram"}), as Hydra picked it.
    choices: dict[str, str]
    report: ReportCfg = ReportCfg()


# Hydra re-reads every YAML on each compose (a third of a second per cell on a 2-core host): a process composing the
# same overrides again (a test run, a plan and its checks) gets the earlier result while no file under conf/ changed.
_COMPOSED: dict[tuple, tuple[dict, dict]] = {}


def _conf_state() -> tuple:
    root = conf_dir()
    return str(root), tuple(sorted((str(path), path.stat().st_mtime_ns, path.stat().st_size)
                                   for path in root.rglob("*.yaml")))  # fmt: skip


def compose_raw(overrides: list[str]):
    """Hydra compose with the project's conf dir; returns (the resolved config as plain containers, group choices)."""
    # Before Hydra sees them: its errors quote overrides, and a composed value could land in config.yaml.
    if problems := secret_override_problems(overrides):
        raise ConfigError(refusal(problems))
    # Interpolations in overrides may read the environment (${oc.env:...}): those are composed every time.
    key = None if any("${" in override for override in overrides) else (_conf_state(), tuple(overrides))
    if key in _COMPOSED:
        raw, choices = _COMPOSED[key]
        return copy.deepcopy(raw), dict(choices)
    raw, choices = _compose_uncached(overrides)
    if key is not None:
        _COMPOSED[key] = (copy.deepcopy(raw), dict(choices))
    return raw, choices


def _compose_uncached(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain_hydra(err, overrides)) from err
    except yaml.YAMLError as err:
        # PyYAML's message names the file, line and column; Hydra would bury it under a hundred lines of traceback.
        where = " ".join(str(err).split())
        raise ConfigError(f"a file under conf/ is not valid YAML: {where}; fix that line") from None
    finally:
        GlobalHydra.instance().clear()
    choices = {
        group: str(option)
        for group, option in cfg.hydra.runtime.choices.items()
        if not group.startswith("hydra") and option is not None
    }
    # hydra.* holds interpolations (${now:...}) that only resolve inside a Hydra app.
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(scrub(f"cannot resolve config for {_shown(overrides)}: {err}")) from err
    # A secret written into a YAML file (or resolved from ${oc.env:...}) is refused the same way.
    if problems := secret_tree_problems(raw):
        raise ConfigError(refusal(problems))
    return raw, choices


def _shown(overrides: list[str]) -> str:
    return " ".join(redact_overrides(overrides)) or "(none)"


def _explain_hydra(err: Exception, overrides: list[str]) -> str:
    message = str(err).split("\nConfig search path:")[0].strip()
    unknown = re.search(r"Could not (?:override|append to) '([^']+)'", message)
    missing = re.search(r"Could not find '(\w+)/([^']+)'", message)
    if unknown:
        parent, _, leaf = unknown.group(1).rpartition(".")
        defaults, _ = compose_raw([])
        node = defaults
        for part in filter(None, parent.split(".")):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        valid = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a config node)"
        hint = did_you_mean(leaf, node, lambda key: f"{parent + '.' if parent else ''}{key}") if isinstance(node, dict) else ""
        message = f"unknown key '{unknown.group(1)}'{hint}; valid keys{' under ' + parent if parent else ''}: {valid}"
    elif missing:
        group, option = missing.groups()
        options = [path.stem for path in (conf_dir() / group).glob("*.yaml")]
        message = f"{group}={option} is no option of {group}{did_you_mean(option, options, lambda o: f'{group}={o}')}; {message}"
    elif "add --multirun" in message:
        # Hydra's advice is for Hydra apps; here a list of values is a sweep, which `cells` and `run` expand.
        message = (message.split("\n")[0] + "\n`specsweep config` shows one cell; to see every cell several values "
                   "make, use `specsweep cells` with the same overrides (`specsweep run` runs them), or quote the value "
                   "for a string (key='a,b') or bracket it for a list (key=[a,b])")  # fmt: skip
    return scrub(f"bad override in `{_shown(overrides)}`: {message}")


def compose_cell(overrides: list[str]) -> Composed:
    raw, choices = compose_raw(overrides)
    sweep_raw = raw.pop("sweep", {})
    quality_raw = raw.pop("quality", {})
    report_raw = raw.pop("report", {})
    try:
        sweep = SweepCfg.model_validate(sweep_raw)
        quality = QualityCfg.model_validate(quality_raw)
        cell = CellCfg.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(err, overrides)) from err
    try:
        report = ReportCfg.model_validate(report_raw)
    except ValidationError as err:
        raise ConfigError(_explain(err, overrides, prefix="report.")) from err
    return Composed(cell=cell, sweep=sweep, quality=quality, choices=choices, report=report)


def _explain(err: ValidationError, overrides: list[str], prefix: str = "") -> str:
    lines = [f"invalid config for overrides {_shown(overrides)}:"]
    for problem in err.errors():
        where = prefix + ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            valid = _valid_keys(CellCfg, problem["loc"][:-1]) if not prefix else None
            where = prefix + ".".join(str(part) for part in _without_tags(CellCfg, problem["loc"]))
            hint = f"valid keys: {', '.join(valid)}" if valid else "see conf/ for the valid keys"
            lines.append(f"  {where}: unknown key; remove it ({hint})")
        elif problem["type"] == "value_error":
            # Our own validators: the message already names the fix; the input is the whole node.
            lines.append(f"  {where or 'config'}: {problem['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {where}: {problem['msg']} (got {problem.get('input')!r})")
    return scrub("\n".join(lines))


def _step(model: type[BaseModel] | None, loc: tuple, index: int) -> tuple[type[BaseModel] | None, int]:
    """Follow loc[index] from `model`; a discriminated union's tag (the next loc part) picks the member."""
    field = model.model_fields.get(str(loc[index])) if model else None
    if field is None:
        return None, index + 1
    members = _models_in(field.annotation)
    if len(members) == 1:
        return members[0], index + 1
    if members and index + 1 < len(loc):
        tag = loc[index + 1]
        for member in members:
            if tag in typing.get_args(member.model_fields["kind"].annotation):
                return member, index + 2
    return None, index + 1


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation admits, through Optional, Union and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    index = 0
    while model is not None and index < len(loc):
        model, index = _step(model, loc, index)
    return sorted(model.model_fields) if model else []


def _without_tags(model: type[BaseModel], loc: tuple) -> list:
    """The loc as the user wrote it: pydantic inserts the discriminator tag (`drafter.ngram.x`)."""
    shown, index = [], 0
    while index < len(loc):
        shown.append(loc[index])
        model, index = _step(model, loc, index)
    return shown


def canonical(cell: CellCfg) -> dict:
    """The cell as plain data, without what does not change it: k means nothing with no drafter."""
    return cell.model_dump(mode="json", exclude={"k"} if cell.drafter.kind == "none" else None)


def cell_yaml(cell: CellCfg) -> str:
    """Canonical YAML of a cell: what jobs receive, what gets hashed, what lands in config.yaml."""
    return yaml.safe_dump(canonical(cell), sort_keys=True)


def config_hash(cell: CellCfg) -> str:
    text = json.dumps(canonical(cell), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


