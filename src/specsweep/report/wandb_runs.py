"""W&B runs: one per cell and one for the whole sweep. The only module (with wandb_report) importing wandb.

Run ids are derived from sweep + cell id, so logging a cell again replaces its run instead of adding
one. W&B trouble never fails a sweep: online without a key or a reachable server falls back to offline
(one warning, recorded in the receipt), and anything else is recorded in the receipt, not raised.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import yaml

from specsweep.atomic import write_json
from specsweep.config.schema import WandbCfg
from specsweep.config.secrets import REDACTED, is_secret_key
from specsweep.records.base import read_record
from specsweep.records.manifest import Manifest
from specsweep.records.table import MEMORY_COLUMNS
from specsweep.records.wandb import Mode, WandbReceipt
from specsweep.report.data import QUALITY_COLUMNS, SweepData, measured, position_columns, summary, with_speedup

# Quiet, offline-safe defaults; set before wandb is imported so its import-time setup sees them too.
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_CONSOLE", "off")
import wandb  # noqa: E402


def wandb_root(sweep_dir: Path) -> Path:
    """What wandb.init gets as `dir`: it appends `wandb/`, so runs land in results/<sweep>/wandb/."""
    return Path(sweep_dir)


def run_id(sweep: str, name: str) -> str:
    """Stable, W&B-valid and readable: `<sweep>-<name>` cleaned, plus a hash so cleaning cannot collide."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{sweep}-{name}")[:48]
    return f"{readable}-{hashlib.sha256(f'{sweep}/{name}'.encode()).hexdigest()[:8]}"


def redact(value):
    """Drop secrets from a config before W&B sees it (env blocks may carry tokens)."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _clean(value):
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _settings(cfg: WandbCfg, mode: Mode) -> "wandb.Settings":
    return wandb.Settings(
        mode=mode,
        console="off",
        silent=True,
        save_code=False,
        disable_git=True,  # the manifest records git state; W&B's own probe only adds noise
        x_disable_stats=True,  # no system-metrics sampler: these runs log finished results
        init_timeout=cfg.init_timeout_s,
    )


def _has_credentials() -> bool:
    """Whether an API key is configured, without the interactive prompt wandb.init could show on a TTY."""
    try:
        from wandb.sdk.lib import wbauth

        host = wandb.Settings().base_url
        return wbauth.authenticate_session(host=host, source="specsweep", prompt=False, update_session=False) is not None
    except Exception:  # noqa: BLE001 - a private API; if it moved, let wandb.init decide
        return True


def _reachable(base_url: str, timeout_s: float) -> bool:
    """Whether anything accepts a connection at the W&B server. Asked first because a failed online init can keep
    its run id registered in a wandb service shared with other runs, which then refuses the offline fallback."""
    url = urlsplit(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=min(timeout_s, 10)):
            return True
    except OSError:
        return False


def _remove_previous(root: Path, rid: str) -> None:
    """A replaced run leaves no older local copy for `wandb sync` to push twice."""
    for old in [*root.glob(f"wandb/offline-run-*-{rid}"), *root.glob(f"wandb/run-*-{rid}")]:
        shutil.rmtree(old, ignore_errors=True)


class _Session:
    def __init__(self, cfg: WandbCfg, root: Path) -> None:
        self.cfg = cfg
        self.root = root
        self.warning: str | None = None

    def init(self, **kwargs) -> "wandb.Run":
        mode: Mode = self.cfg.mode
        if mode == "online" and not _has_credentials():
            self.warning = (
                "W&B mode is online but no API key is configured (WANDB_API_KEY or `wandb login`); "
                f"logging offline under {self.root / 'wandb'} instead: push later with `wandb sync`"
            )
            mode = "offline"
        if mode == "online" and not _reachable(wandb.Settings().base_url, self.cfg.init_timeout_s):
            self.warning = (
                f"W&B server {wandb.Settings().base_url} is not reachable; logging offline under "
                f"{self.root / 'wandb'} instead: push later with `wandb sync`"
            )
            mode = "offline"
        _remove_previous(self.root, kwargs["id"])
        self.root.mkdir(parents=True, exist_ok=True)
        common = dict(project=self.cfg.project, entity=self.cfg.entity, dir=str(self.root), reinit="finish_previous")
        if mode == "online":
            try:
                return wandb.init(**common, **kwargs, resume="allow", settings=_settings(self.cfg, "online"))
            except wandb.errors.Error as err:
                self.warning = (
                    f"W&B online logging failed ({str(err).splitlines()[0]}); logging offline under "
                    f"{self.root}/wandb instead: push later with `wandb sync`"
                )
                # The failed attempt leaves its run id registered in wandb's service process, and an offline
                # init with the same id is then refused ("run ID ... is in use"): start from a fresh service.
                wandb.teardown()
                _remove_previous(self.root, kwargs["id"])
        return wandb.init(**common, **kwargs, settings=_settings(self.cfg, "offline"))


def _finish(run, session: _Session, base: dict) -> WandbReceipt:
    run_dir = Path(run.dir).parent
    mode_used = "offline" if run.settings._offline else "online"
    run.finish()
    if session.warning:
        print(f"specsweep: WARNING: {session.warning}", file=sys.stderr, flush=True)
    return WandbReceipt(
        **base,
        run_dir=str(run_dir.relative_to(session.root)) if run_dir.is_relative_to(session.root) else str(run_dir),
        mode_used=mode_used,
        warning=session.warning,
        logged_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _guarded(base: dict, cfg: WandbCfg, log) -> WandbReceipt:
    """Run one logging step; disabled mode and any W&B failure become receipts, never exceptions."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.mode == "disabled":
        return WandbReceipt(**base, run_dir=None, mode_used="disabled", logged_at=now)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return log()
    except Exception as err:  # noqa: BLE001 - reporting must never fail the sweep
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        print(f"specsweep: WARNING: W&B logging failed, results are unaffected: {message}", file=sys.stderr)
        return WandbReceipt(**base, run_dir=None, mode_used="failed", error=message, logged_at=now)


def _digest(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode())
        hasher.update(b"\0")
    return hasher.hexdigest()


def _reusable(receipt_path: Path, digest: str, root: Path) -> WandbReceipt | None:
    """The previous receipt, if it logged exactly this content and its run is still on disk."""
    if not receipt_path.is_file():
        return None
    try:
        old = read_record(WandbReceipt, receipt_path)
    except ValueError:
        return None
    if old.content_sha256 != digest or old.mode_used in ("failed",) or old.warning:
        return None
    if old.mode_used == "offline" and not (old.run_dir and (root / old.run_dir).is_dir()):
        return None
    return old


CELL_EVAL_NUMBERS = ["lossless_match_pct", "endpoint_ppl", "endpoint_kld_topk", "endpoint_ppl_recovery_pct",
                     "endpoint_top1_agreement"]  # fmt: skip


def cell_metrics(rows: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Summary metrics of one cell: overall figures plus one key per workload x concurrency."""
    cell_summary = summary(rows, _quality_of(table))
    out: dict = {}
    if len(cell_summary):
        first = cell_summary.iloc[0]
        for key in ("tg_tps_mean", "speedup_geomean", "acceptance_rate", "mean_acceptance_length", *QUALITY_COLUMNS):
            out[key] = _clean(first[key])
    # The cell's quality figures (the table repeats them on each of its rows): losslessness, endpoint, lm-eval.
    first_row = rows.iloc[0] if len(rows) else {}
    for key in [*CELL_EVAL_NUMBERS, *MEMORY_COLUMNS,
                *(c for c in rows.columns if c.startswith("lm_eval_") and not c.endswith("_metric"))]:  # fmt: skip
        if key in rows:
            out[key] = _clean(first_row[key])
    with_base = with_speedup(table)
    with_base = with_base[with_base["cell_id"].isin(rows["cell_id"])]
    for row in with_base.to_dict("records"):
        prefix = f"{row['workload']}_c{int(row['concurrency'])}"
        for key in ("tg_tps_mean", "tg_tps_std", "pp_tps_mean", "ttfr_ms_mean", "speedup", "acceptance_rate",
                    "mean_acceptance_length"):  # fmt: skip
            if key in row:
                out[f"{prefix}/{key}"] = _clean(row[key])
    return {k: v for k, v in out.items() if v is not None}


def _quality_of(table: pd.DataFrame) -> pd.DataFrame:
    from specsweep.report.data import quality_from_table

    return quality_from_table(table)


def with_wandb_env(cfg: WandbCfg) -> WandbCfg:
    """W&B's own variables win where set, as they do for wandb itself: WANDB_MODE (dryrun is offline),
    WANDB_PROJECT, WANDB_ENTITY."""
    mode = {"dryrun": "offline"}.get(os.environ.get("WANDB_MODE", ""), os.environ.get("WANDB_MODE", ""))
    update = {
        **({"mode": mode} if mode in ("online", "offline", "disabled") else {}),
        **({"project": os.environ["WANDB_PROJECT"]} if os.environ.get("WANDB_PROJECT") else {}),
        **({"entity": os.environ["WANDB_ENTITY"]} if os.environ.get("WANDB_ENTITY") else {}),
    }
    return cfg.model_copy(update=update)


def log_cell(cell_dir: Path, data: SweepData, cfg: WandbCfg, receipt_path: Path, force: bool = False) -> WandbReceipt:
    cfg = with_wandb_env(cfg)
    cell_dir = Path(cell_dir)
    cell_id = cell_dir.name
    root = wandb_root(cell_dir.parent)
    rows = data.table[data.table["cell_id"] == cell_id]
    if rows.empty:
        raise ValueError(f"cell {cell_id} has no rows in the sweep table")
    first = rows.iloc[0]
    config_text = (cell_dir / "config.yaml").read_text() if (cell_dir / "config.yaml").is_file() else "{}"
    manifest_path = cell_dir / "manifest.json"
    manifest = read_record(Manifest, manifest_path).model_dump(mode="json") if manifest_path.is_file() else {}
    manifest_text = json.dumps(manifest, sort_keys=True)
    metrics = cell_metrics(rows, data.table)
    rid = run_id(data.sweep, cell_id)
    digest = _digest(rows.to_json(orient="records"), json.dumps(metrics, sort_keys=True), config_text,
                     manifest_text, cfg.model_dump_json())  # fmt: skip
    base = dict(run_id=rid, name=cell_id, group=data.sweep, job_type="run_cell", mode_requested=cfg.mode,
                content_sha256=digest)  # fmt: skip
    if not force and (old := _reusable(receipt_path, digest, root)):
        print(f"[wandb] {cell_id}: unchanged since {old.logged_at}; run {rid} kept", file=sys.stderr)
        write_json(receipt_path, old.model_dump())
        return old

    k = None if pd.isna(first["k"]) else int(first["k"])
    tags = [f"quant:{first['quant']}", f"drafter:{first['drafter']}", f"k:{k if k is not None else 'none'}",
            f"status:{first['status']}"]  # fmt: skip
    config = redact(yaml.safe_load(config_text) or {})
    config["specsweep"] = redact({
        "sweep": data.sweep, "cell_id": cell_id, "quant": first["quant"], "drafter": first["drafter"],
        "drafter_kind": first["drafter_kind"], "k": k, "status": first["status"],
        "config_hash": manifest.get("config_hash"),
    })  # fmt: skip
    # The whole manifest (image, vLLM commit, weights' sha256, hardware, git state): what produced the numbers.
    config["manifest"] = redact({k: v for k, v in manifest.items() if k != "config"})

    def log() -> WandbReceipt:
        session = _Session(cfg, root)
        run = session.init(id=rid, name=cell_id, group=data.sweep, job_type="run_cell", tags=tags, config=config)
        measured_rows = measured(rows)
        run.log({"k": k, **{key: v for key, v in metrics.items() if "/" not in key}})
        positions = position_columns(measured_rows)
        drafts = measured_rows["drafts"].fillna(0)
        for i, column in enumerate(positions[: k or 0], start=1):
            valid = measured_rows[column].notna() & (drafts > 0)
            if valid.any():
                rate = float((measured_rows[column][valid] * drafts[valid]).sum() / drafts[valid].sum())
                run.log({"acceptance/position": i, "acceptance/rate": rate})
        run.summary.update(metrics)
        run.summary["status"] = str(first["status"])
        if isinstance(first.get("skip_reason"), str):
            run.summary["skip_reason"] = first["skip_reason"]
        if isinstance(first.get("error"), str):
            run.summary["error"] = first["error"]
        run.log({"rows": wandb.Table(dataframe=rows.astype(object).where(rows.notna(), None))})
        artifact = wandb.Artifact(f"cell-{rid}", type="cell-record", metadata={"cell_id": cell_id})
        for name in ("manifest.json", "server.log", "config.yaml"):
            if (cell_dir / name).is_file():
                artifact.add_file(str(cell_dir / name), name=name)
        run.log_artifact(artifact)
        return _finish(run, session, base)

    receipt = _guarded(base, cfg, log)
    write_json(receipt_path, receipt.model_dump())
    return receipt


def log_sweep(sweep_dir: Path, data: SweepData, cfg: WandbCfg, receipt_path: Path, attach: list[Path]) -> WandbReceipt:
    """The aggregate run: the whole table, the quality table, the summary, and the report files."""
    cfg = with_wandb_env(cfg)
    sweep_dir = Path(sweep_dir)
    root = wandb_root(sweep_dir)
    rid = run_id(data.sweep, "sweep")
    table_json = data.table.to_json(orient="records")
    digest = _digest(table_json, data.quality.to_json(orient="records"), data.evals.to_json(orient="records"), cfg.model_dump_json(),
                     *(p.read_text(errors="replace") for p in attach if p.is_file() and p.suffix != ".html"))  # fmt: skip
    base = dict(run_id=rid, name=f"{data.sweep} (sweep)", group=data.sweep, job_type="aggregate",
                mode_requested=cfg.mode, content_sha256=digest)  # fmt: skip
    if old := _reusable(receipt_path, digest, root):
        write_json(receipt_path, old.model_dump())
        return old
    sweep_summary = summary(data.table, data.quality)

    def frame(df: pd.DataFrame) -> "wandb.Table":
        return wandb.Table(dataframe=df.astype(object).where(df.notna(), None))

    def log() -> WandbReceipt:
        session = _Session(cfg, root)
        config = {"sweep": data.sweep, "cells": sorted(map(str, data.table["cell_id"].unique())),
                  "report": cfg.model_dump()}  # fmt: skip
        run = session.init(id=rid, name=base["name"], group=data.sweep, job_type="aggregate",
                           tags=["aggregate"], config=config)  # fmt: skip
        run.log({"results": frame(data.table), "quality": frame(data.quality), "summary": frame(sweep_summary),
                 **({"evals": frame(data.evals)} if len(data.evals) else {}),
                 **({"k_advisor": frame(data.predictions)} if len(data.predictions) else {})})  # fmt: skip
        drafted = sweep_summary[sweep_summary["drafter"] != "none"].dropna(subset=["speedup_geomean"])
        if len(drafted):
            best = drafted.loc[drafted["speedup_geomean"].idxmax()]
            run.summary.update({"best_speedup": float(best["speedup_geomean"]), "best_quant": str(best["quant"]),
                                "best_drafter": str(best["drafter"]), "best_k": _clean(best["k"])})  # fmt: skip
        run.summary["cells"] = int(data.table["cell_id"].nunique())
        artifact = wandb.Artifact(f"sweep-{rid}", type="sweep-report")
        for path in attach:
            if path.is_file():
                artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
        return _finish(run, session, base)

    receipt = _guarded(base, cfg, log)
    write_json(receipt_path, receipt.model_dump())
    return receipt
