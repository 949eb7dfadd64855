"""The sweep's W&B Report, built by code (wandb-workspaces reports.v2).

Offline it is written as JSON (the report's own viewspec plus an index of its panels) next to the
results; `specsweep report publish` loads that file and saves it to W&B. Building it needs no network:
entity is always passed explicitly, since reports.v2 otherwise asks the W&B API for a default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import wandb_workspaces.reports.v2 as wr
from wandb_workspaces import expr
from wandb_workspaces.reports.v2 import internal

from specsweep.atomic import write_json
from specsweep.config.schema import WandbCfg
from specsweep.report.data import SweepData, lm_eval_tasks, measured, summary

SPEC_VERSION = 1


def _runset(cfg: WandbCfg, sweep: str, name: str, drafter: str | None = None, job_type: str = "run_cell") -> wr.Runset:
    filters = [expr.Metric("Group") == sweep, expr.Metric("JobType") == job_type]
    if drafter is not None:
        filters.append(expr.Config("drafter.name") == drafter)
    return wr.Runset(entity=cfg.entity or "", project=cfg.project, name=name, filters=expr.And(*filters))


def _summary_text(data: SweepData) -> str:
    frame = summary(data.table, data.quality)
    cells = data.table["cell_id"].nunique()
    skipped = int((data.table.drop_duplicates("cell_id")["status"] == "skipped").sum())
    text = f"Sweep {data.sweep}: {cells} cells ({skipped} skipped)."
    drafted = frame[frame["drafter"] != "none"].dropna(subset=["speedup_geomean"])
    if len(drafted):
        best = drafted.loc[drafted["speedup_geomean"].idxmax()]
        k = "" if pd.isna(best["k"]) else f" k={int(best['k'])}"
        text += (
            f" Best: {best['quant']} / {best['drafter']}{k} at {best['speedup_geomean']:.2f}× the same quant"
            f" without a drafter ({best['tg_tps_mean']:.1f} tg t/s, acceptance {best['acceptance_rate']:.2f})."
        )
    return text


def build(data: SweepData, cfg: WandbCfg) -> wr.Report:
    by_quant = wr.Config("quant.name")
    rows = measured(data.table)
    drafters = sorted(rows.loc[rows["drafter_kind"] != "none", "drafter"].dropna().unique())
    blocks: list = [wr.H1(f"specsweep: {data.sweep}"), wr.P(_summary_text(data))]
    for drafter in drafters:
        blocks += [
            wr.H2(f"{drafter}: speed and acceptance vs k"),
            wr.PanelGrid(
                runsets=[_runset(cfg, data.sweep, f"{data.sweep} / {drafter}", drafter)],
                panels=[
                    wr.LinePlot(title=f"tg t/s vs k ({drafter}, one line per quant)", x="k", y=["tg_tps_mean"],
                                groupby=by_quant, title_x="k", title_y="tg t/s"),
                    wr.LinePlot(title=f"speedup over no drafter vs k ({drafter})", x="k", y=["speedup_geomean"],
                                groupby=by_quant, title_x="k", title_y="speedup (same quant, no drafter = 1)"),
                    wr.LinePlot(title=f"acceptance by draft position ({drafter}, one line per cell)",
                                x="acceptance/position", y=["acceptance/rate"], title_x="draft position",
                                title_y="accepted / drafts"),
                ],
            ),  # fmt: skip
        ]
    blocks += [
        wr.H2("Quality vs speed"),
        wr.PanelGrid(
            runsets=[_runset(cfg, data.sweep, f"{data.sweep} / all cells")],
            panels=[
                wr.ScatterPlot(title="perplexity vs tg t/s", x=wr.SummaryMetric("ppl"), y=wr.SummaryMetric("tg_tps_mean")),
                wr.ScatterPlot(title="KLD vs tg t/s", x=wr.SummaryMetric("kld"), y=wr.SummaryMetric("tg_tps_mean")),
                wr.ScatterPlot(title="PPL recovery % vs tg t/s", x=wr.SummaryMetric("ppl_recovery_pct"),
                               y=wr.SummaryMetric("tg_tps_mean")),
                wr.ScatterPlot(title="endpoint top-k KLD vs tg t/s (per cell)", x=wr.SummaryMetric("endpoint_kld_topk"),
                               y=wr.SummaryMetric("tg_tps_mean")),
                *(wr.ScatterPlot(title=f"lm-eval {task} vs tg t/s (per cell)", x=wr.SummaryMetric(f"lm_eval_{task}"),
                                 y=wr.SummaryMetric("tg_tps_mean")) for task in lm_eval_tasks(data.evals)),
                wr.ScatterPlot(title="lossless % (greedy, concurrency 1) vs tg t/s", x=wr.SummaryMetric("lossless_match_pct"),
                               y=wr.SummaryMetric("tg_tps_mean")),
                wr.RunComparer(diff_only="split"),
            ],
        ),  # fmt: skip
    ]
    if len(data.predictions):
        # The aggregate run logs the k-advisor's table (wandb_runs: "k_advisor"): predicted vs measured per k and
        # per served schedule.
        blocks += [
            wr.H2("k-advisor: predicted vs measured tg t/s"),
            wr.PanelGrid(
                runsets=[_runset(cfg, data.sweep, f"{data.sweep} / aggregate", job_type="aggregate")],
                panels=[wr.WeavePanelSummaryTable(table_name="k_advisor", layout=wr.Layout(w=24, h=12))],
            ),
        ]
    return wr.Report(
        entity=cfg.entity or "",
        project=cfg.project,
        title=f"specsweep: {data.sweep}",
        description=_summary_text(data),
        blocks=blocks,
        width="fluid",
    )


def _table_key(node) -> str | None:
    """The logged table a Weave panel shows: its expression picks `runs.summary[key]`."""
    if isinstance(node, dict):
        if node.get("name") == "pick" and isinstance(key := node.get("inputs", {}).get("key"), dict) and "val" in key:
            return key["val"]
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    return next((found for child in children if (found := _table_key(child)) is not None), None)


def panel_index(viewspec: dict) -> list[dict]:
    """Each panel of a viewspec with what it plots and which runs it is bound to (read from the viewspec)."""
    out = []
    for block in viewspec["spec"]["blocks"]:
        if block.get("type") != "panel-grid":
            continue
        metadata = block["metadata"]
        runsets = [
            {"name": rs.get("name"), "filters": [
                {"key": f["key"]["name"], "op": f["op"], "value": f["value"]}
                for f in (rs.get("filters") or {}).get("filters", [])
            ]} for rs in metadata.get("runSets", [])
        ]  # fmt: skip
        for panel in metadata["panelBankSectionConfig"]["panels"]:
            config = panel.get("config", {})
            out.append(
                {
                    "type": panel["viewType"],
                    "title": config.get("chartTitle"),
                    "x": config.get("xAxis"),
                    "y": config.get("metrics") or config.get("yAxis") or _table_key(config),
                    "groupby": config.get("groupBy"),
                    "runsets": runsets,
                }
            )
    return out


def write_spec(data: SweepData, cfg: WandbCfg, path: Path) -> dict:
    from specsweep.report.wandb_runs import with_wandb_env

    cfg = with_wandb_env(cfg)
    viewspec = build(data, cfg)._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
    spec = {
        "specsweep_report_spec": SPEC_VERSION,
        "sweep": data.sweep,
        "group": data.sweep,
        "entity": cfg.entity,
        "project": cfg.project,
        "title": viewspec["displayName"],
        "panels": panel_index(viewspec),
        "viewspec": viewspec,
    }
    write_json(Path(path), spec)
    return spec


class PublishError(RuntimeError):
    """Publishing cannot happen here (offline, no key, no entity, the server refused), said with the fix."""


def publish(spec_path: Path, entity: str | None = None, project: str | None = None) -> str:
    """Save the written report spec to W&B (needs a key and the network); returns the report URL. Entity and project
    follow W&B's own variables where not given (WANDB_ENTITY, WANDB_PROJECT), then the spec, then the key's entity."""
    import wandb

    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "disabled", "dryrun"):
        raise PublishError(f"WANDB_MODE={mode}: publishing a report needs the W&B server; unset WANDB_MODE (or set it to "
                           "online), then run this again")  # fmt: skip
    spec = json.loads(Path(spec_path).read_text())
    try:
        api = wandb.Api()
    except Exception as err:  # wandb raises UsageError without a key, CommError without the server
        raise PublishError(f"W&B is not reachable with this login ({' '.join(str(err).split())[:300]}); run `wandb "
                           "login` (or export WANDB_API_KEY) and check WANDB_BASE_URL") from None  # fmt: skip
    if not api.api_key:
        raise PublishError("no W&B API key: run `wandb login` (or export WANDB_API_KEY), then run this again")
    report = wr.Report._from_model(internal.ReportViewspec.model_validate(spec["viewspec"]))
    report.entity = entity or os.environ.get("WANDB_ENTITY") or spec.get("entity") or report.entity or None
    report.project = project or os.environ.get("WANDB_PROJECT") or spec["project"]
    if not report.entity:
        try:
            report.entity = api.default_entity
        except Exception:  # the server could not say
            report.entity = None
    if not report.entity:
        raise PublishError("no W&B entity to publish under: pass --entity NAME or export WANDB_ENTITY=NAME")
    for block in report.blocks:
        for runset in getattr(block, "runsets", []) or []:
            runset.entity, runset.project = report.entity, report.project
    try:
        report.save()
    except Exception as err:  # pydantic's ValidationError, wandb's CommError, requests' errors: one line each
        raise PublishError(f"W&B refused the report for {report.entity}/{report.project}: "
                           f"{' '.join(str(err).split())[:400]}") from None  # fmt: skip
    return report.url
