"""The sweep's figures (matplotlib, rendered headless): the same four views as the W&B report."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import matplotlib
import pandas as pd

matplotlib.use("Agg")  # no display on CI or on the cluster; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from specsweep.report.data import (  # noqa: E402
    QUALITY_COLUMNS,
    SweepData,
    acceptance_by_depth,
    cell_quality,
    measured,
    position_columns,
    summary,
    with_speedup,
)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    caption: str
    draw: Callable[[SweepData], Figure]


def _integer_axis(ax, label: str) -> None:
    """k and draft positions are whole numbers: no tick at 2.5."""
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _empty(fig: Figure, ax, message: str) -> Figure:
    # An honest empty panel: the reader sees why there is nothing to plot instead of a missing figure.
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _series_label(workload: str, concurrency) -> str:
    return f"{workload} (c{concurrency})"


def tg_vs_k(data: SweepData) -> Figure:
    rows = with_speedup(data.table)
    drafters = sorted(rows.loc[rows["drafter_kind"] != "none", "drafter"].unique())
    tests = rows[["workload", "concurrency"]].drop_duplicates().sort_values(["workload", "concurrency"])
    if not drafters or tests.empty:
        fig, ax = plt.subplots(figsize=(6, 3))
        return _empty(fig, ax, "no drafted cells measured: nothing to plot against k")
    fig, axes = plt.subplots(
        len(drafters), len(tests), figsize=(3.6 * len(tests), 3.0 * len(drafters)), squeeze=False, sharex=True
    )
    for i, drafter in enumerate(drafters):
        for j, (workload, concurrency) in enumerate(tests.itertuples(index=False)):
            ax = axes[i][j]
            here = rows[(rows["workload"] == workload) & (rows["concurrency"] == concurrency)]
            for quant, group in here[here["drafter"] == drafter].groupby("quant"):
                group = group.sort_values("k")
                line = ax.errorbar(group["k"].astype(float), group["tg_tps_mean"], yerr=group["tg_tps_std"],
                                   marker="o", capsize=3, label=quant)  # fmt: skip
                base = group["baseline_tg_tps"].dropna()
                if len(base):
                    ax.axhline(base.iloc[0], linestyle="--", color=line[0].get_color(), alpha=0.6)
            ax.set_title(f"{drafter} — {_series_label(workload, concurrency)}", fontsize=9)
            _integer_axis(ax, "k (draft tokens)")
            ax.set_ylabel("tg t/s")
            ax.grid(alpha=0.3)
            ax.legend(title="quant (dashed: no drafter)", fontsize=7, title_fontsize=7)
    fig.tight_layout()
    return fig


def acceptance_curves(data: SweepData) -> Figure:
    rows = measured(data.table)
    rows = rows[rows["drafter_kind"] != "none"]
    positions = position_columns(rows)
    drafters = sorted(rows["drafter"].unique())
    if not drafters or not positions:
        fig, ax = plt.subplots(figsize=(6, 3))
        return _empty(fig, ax, "no per-position acceptance recorded")
    fig, axes = plt.subplots(1, len(drafters), figsize=(4.5 * len(drafters), 3.2), squeeze=False)
    for ax, drafter in zip(axes[0], drafters):
        for (quant, k), group in rows[rows["drafter"] == drafter].groupby(["quant", "k"]):
            # Per cell: the drafts-weighted mean over its workloads, so a short workload does not dominate.
            weights = group["drafts"].fillna(0)
            curve = []
            for column in positions[: int(k)]:
                values = group[column]
                valid = values.notna() & (weights > 0)
                curve.append((values[valid] * weights[valid]).sum() / weights[valid].sum() if valid.any() else None)
            xs = [i + 1 for i, v in enumerate(curve) if v is not None]
            ax.plot(xs, [v for v in curve if v is not None], marker="o", label=f"{quant} k={k}")
        ax.set_title(f"{drafter}: acceptance by draft position", fontsize=9)
        _integer_axis(ax, "draft position")
        ax.set_ylabel("accepted / drafts")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _per_test(rows: pd.DataFrame) -> tuple[Figure, list]:
    """One panel per (workload, concurrency), sharing the y axis: (figure, [(axis, (workload, concurrency), rows)])."""
    tests = rows[["workload", "concurrency"]].drop_duplicates().sort_values(["workload", "concurrency"])
    fig, axes = plt.subplots(1, len(tests), figsize=(3.8 * len(tests), 3.2), squeeze=False, sharey=True)
    panels = [(ax, (workload, concurrency), rows[(rows["workload"] == workload) & (rows["concurrency"] == concurrency)])
              for ax, (workload, concurrency) in zip(axes[0], tests.itertuples(index=False))]  # fmt: skip
    return fig, panels


def speedup(data: SweepData) -> Figure:
    rows = with_speedup(data.table)
    rows = rows[(rows["drafter_kind"] != "none") & rows["speedup"].notna()]
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 3))
        return _empty(fig, ax, "no speedup: the sweep has no drafted cell with a same-quant no-drafter baseline")
    fig, panels = _per_test(rows)
    for ax, (workload, concurrency), here in panels:
        for (quant, drafter), group in here.groupby(["quant", "drafter"]):
            group = group.sort_values("k")
            ax.plot(group["k"].astype(float), group["speedup"], marker="o", label=f"{quant} / {drafter}")
        ax.axhline(1.0, color="grey", linestyle=":")
        ax.set_title(_series_label(workload, concurrency), fontsize=9)
        _integer_axis(ax, "k (draft tokens)")
        ax.set_ylabel("speedup vs no drafter")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def quality_vs_speed(data: SweepData) -> Figure:
    table = summary(data.table, data.quality)
    has_quality = table[QUALITY_COLUMNS].notna().any(axis=None) if len(table) else False
    if not has_quality:
        fig, ax = plt.subplots(figsize=(6, 3))
        return _empty(fig, ax, "no quality measurements (PPL / KLD) in this sweep")
    metrics = [c for c in QUALITY_COLUMNS if table[c].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    labels = {"ppl": "perplexity", "kld": "KLD vs base", "ppl_recovery_pct": "PPL recovery %"}
    for ax, metric in zip(axes[0], metrics):
        for drafter, group in table.groupby("drafter"):
            # Best configuration per quant for this drafter: what a reader would deploy.
            best = group.loc[group.groupby("quant")["tg_tps_mean"].idxmax()]
            ax.scatter(best[metric], best["tg_tps_mean"], label=drafter)
            for point in best.itertuples():
                ax.annotate(str(point.quant), (getattr(point, metric), point.tg_tps_mean), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xlabel(labels[metric])
        ax.set_ylabel("best tg t/s")
        ax.grid(alpha=0.3)
        ax.legend(title="drafter", fontsize=7, title_fontsize=7)
    fig.tight_layout()
    return fig


def acceptance_depth(data: SweepData) -> Figure:
    frame = acceptance_by_depth(data.table)
    if frame.empty or frame["depth"].nunique() < 2:
        fig, ax = plt.subplots(figsize=(6, 3))
        return _empty(fig, ax, "no llama-benchy rows at two or more depths from a drafter cell (bench.synthetic.depth)")
    cells = sorted(frame["cell_id"].unique())
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.2), squeeze=False, sharey=True)
    for ax, cell in zip(axes[0], cells):
        here = frame[frame["cell_id"] == cell]
        for position, group in here.groupby("position"):
            group = group.sort_values("depth")
            ax.plot(group["depth"], group["acceptance"], marker="o", label=f"position {position}")
        first = here.iloc[0]
        ax.set_title(f"{first['quant']} / {first['drafter']} k={first['k']}", fontsize=9)
        ax.set_xlabel("context depth (tokens)")
        ax.set_ylabel("accepted / drafts")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def predictions(data: SweepData) -> Figure:
    frame = data.predictions
    if frame.empty:
        fig, ax = plt.subplots(figsize=(6, 3))
        return _empty(fig, ax, "no k-advisor predictions (no drafter measured at two or more k, or no advice.json)")
    fig, panels = _per_test(frame)
    for ax, (workload, concurrency), here in panels:
        fixed = here[here["policy"] == "fixed k"]
        for (quant, drafter), group in fixed.groupby(["quant", "drafter"]):
            group = group.sort_values("k")
            line = ax.plot(group["k"], group["predicted_tg_req_tps"], linestyle="--", label=f"{quant} / {drafter} predicted")[0]
            measured = group.dropna(subset=["measured_tg_req_tps"])
            ax.scatter(measured["k"], measured["measured_tg_req_tps"], color=line.get_color(), zorder=3,
                       label=f"{quant} / {drafter} measured")  # fmt: skip
            schedules = here[(here["policy"] != "fixed k") & (here["quant"] == quant) & (here["drafter"] == drafter)]
            for point in schedules.itertuples():
                # At the k the schedule sets for this batch size: on the dashed line if the prediction holds.
                ax.scatter([point.k], [point.measured_tg_req_tps], marker="*", s=110, color=line.get_color(), zorder=4,
                           edgecolors="black", linewidths=0.5, label=f"{quant} / {drafter} {point.policy}")  # fmt: skip
            for points, offset in ((measured, (3, -8)), (schedules, (4, 4))):
                for point in points.dropna(subset=["error_pct"]).itertuples():
                    ax.annotate(f"{point.error_pct:+.0f}%", (point.k, point.measured_tg_req_tps), fontsize=6,
                                xytext=offset, textcoords="offset points")  # fmt: skip
        ax.set_title(_series_label(workload, concurrency), fontsize=9)
        _integer_axis(ax, "k (draft tokens)")
        ax.set_ylabel("tg t/s per request")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def pareto(data: SweepData) -> Figure:
    cells, label = cell_quality(data)
    cells = cells.dropna(subset=["quality", "tg_tps_mean"])
    if label is None or cells.empty:
        fig, ax = plt.subplots(figsize=(6, 3))
        return _empty(fig, ax, "no quality figure (lm-eval, endpoint or in-process) for any measured cell")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for drafter, group in cells.groupby("drafter"):
        ax.scatter(group["tg_tps_mean"], group["quality"], label=drafter, zorder=3)
    not_lossless = cells[cells["lossless_match_pct"] < 100]
    if len(not_lossless):
        ax.scatter(not_lossless["tg_tps_mean"], not_lossless["quality"], marker="x", s=90, color="red", zorder=4,
                   label="not lossless (greedy outputs changed)")  # fmt: skip
    for point in cells.itertuples():
        k = "" if pd.isna(point.k) else f" k{int(point.k)}"
        ax.annotate(f"{point.quant}/{point.drafter}{k}", (point.tg_tps_mean, point.quality), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    # The frontier: cells no other cell beats on both speed and quality.
    ordered = cells.sort_values(["tg_tps_mean", "quality"], ascending=[False, False])
    frontier, best = [], -math.inf
    for point in ordered.itertuples():
        if point.quality > best:
            frontier.append(point)
            best = point.quality
    ax.plot([p.tg_tps_mean for p in frontier], [p.quality for p in frontier], color="grey", linestyle="--",
            linewidth=1, label="Pareto frontier", zorder=2)  # fmt: skip
    ax.set_xlabel("tg t/s (mean over the cell's workloads)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES: dict[str, FigureSpec] = {
    spec.name: spec
    for spec in [
        FigureSpec("tg_vs_k", "Generation speed vs k", "tg t/s (mean ± std over runs) per drafter and test; "
                   "one line per quant, dashed: the same quant without a drafter.", tg_vs_k),
        FigureSpec("acceptance", "Acceptance by draft position", "Fraction of drafts whose i-th token was "
                   "accepted (drafts-weighted over workloads), one line per quant and k.", acceptance_curves),
        FigureSpec("speedup", "Speedup over the no-drafter baseline", "tg t/s divided by the same quant's "
                   "no-drafter tg t/s on the same workload and concurrency; below 1 the drafter loses.", speedup),
        FigureSpec("quality", "Quality vs speed", "Per quant: perplexity, KLD and PPL recovery against the best "
                   "tg t/s each drafter reached.", quality_vs_speed),
        FigureSpec("pareto", "Quant × drafter: quality vs speed per cell", "Every measured cell: its tg t/s and "
                   "its quant's quality (lm-eval score where run, else endpoint PPL recovery); a red cross marks a "
                   "cell whose greedy outputs differ from its quant's no-drafter cell at concurrency 1.", pareto),
        FigureSpec("acceptance_depth", "Acceptance vs context depth", "Per drafter cell, llama-benchy's rows at each "
                   "depth (concurrency 1): one line per draft position; where a drafter falls apart on long context.",
                   acceptance_depth),
        FigureSpec("predictions", "k-advisor: predicted vs measured", "Per workload and concurrency: tg t/s per "
                   "request predicted for every k from the largest k's acceptance and the fitted step cost (dashed), "
                   "the measured cells (points, prediction error in %), and cells that served a recommended "
                   "batch-size schedule (stars, at the k the schedule sets there).", predictions),
    ]
}  # fmt: skip


def render_png(spec: FigureSpec, data: SweepData, dpi: int = 110) -> bytes:
    fig = spec.draw(data)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)
