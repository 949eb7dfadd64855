"""One self-contained report.html: figures inline as PNG data URIs, tables, manifest; opens offline."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from typing import Callable

import pandas as pd

from specsweep.report.data import (
    SweepData,
    best_k,
    failed,
    manifest_summary,
    memory_per_cell,
    provenance,
    skipped,
    summary,
)
from specsweep.report.figures import FIGURES, render_png

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
h1{margin-bottom:.2em}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0 2em}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:13px}.scroll{overflow-x:auto}.failed{color:#a00}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dt{font-weight:600}
dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
"""

# Marks <body> once every figure has decoded, so a headless browser check can tell "rendered" from "present".
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('img.figure'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures', String(imgs.length));
  document.body.setAttribute('data-figures-rendered', String(ok));
});
"""


def _table(frame: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    def fmt(value):
        return float_format.format(value) if isinstance(value, float) else value

    shown = frame.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else fmt(v))
        elif str(shown[column].dtype) == "Int64":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else str(v))
    return '<div class="scroll">' + shown.to_html(index=False, na_rep="", escape=True, border=0) + "</div>"


EVALS_SHOWN = ["cell_id", "quant", "drafter", "k", "lossless_match_pct", "endpoint_ppl", "endpoint_ppl_recovery_pct",
               "endpoint_kld_topk", "endpoint_top1_agreement", "served_checkpoint_check"]  # fmt: skip


def evals_section(evals: pd.DataFrame) -> list[str]:
    """Quality per cell through its own server: losslessness flagged first, then the figures."""
    if evals.empty:
        return []
    parts = ["<h2>Quality per cell (through the served endpoint)</h2>",
             "<p>Losslessness: greedy outputs of the fixed prompt set at concurrency 1, each drafter cell against its "
             "quant's no-drafter cell. Endpoint PPL/KLD: prompt logprobs (top-k) of the held-out windows against the "
             "base's no-drafter cell; top-k KLD is a lower bound of the full KLD (tokens outside both top-k sets "
             "share one bucket). Served-checkpoint check: the served quant's logprobs against the same quant "
             "measured in-process.</p>"]  # fmt: skip
    flagged = evals[evals["lossless_match_pct"].notna() & (evals["lossless_match_pct"] < 100)]
    for row in flagged.itertuples():
        parts.append(f'<p class="failed"><b>Not lossless: {html.escape(str(row.cell_id))}</b>: '
                     f"{html.escape(str(row.lossless_detail))}</p>")  # fmt: skip
    mismatched = evals[evals["served_checkpoint_check"].notna()
                       & ~evals["served_checkpoint_check"].astype(str).str.startswith(("ok", "not checked"))]  # fmt: skip
    for row in mismatched.itertuples():
        parts.append(f'<p class="failed"><b>Served checkpoint mismatch: {html.escape(str(row.cell_id))}</b>: '
                     f"{html.escape(str(row.served_checkpoint_check))}</p>")  # fmt: skip
    lm_eval = [c for c in evals.columns if c.startswith("lm_eval_") and not c.endswith(("_metric", "_n", "_wall_s"))]
    shown = [c for c in EVALS_SHOWN if c in evals] + lm_eval
    measured_cells = evals.dropna(subset=[c for c in shown if c not in ("cell_id", "quant", "drafter", "k")], how="all")
    parts.append(_table(measured_cells[shown], "{:.4f}"))
    return parts


def render(data: SweepData, dpi: int = 110, progress: Callable[[str], None] = lambda name: None) -> str:
    figures = []
    for spec in FIGURES.values():
        png = base64.b64encode(render_png(spec, data, dpi=dpi)).decode()
        figures.append(
            f'<figure id="fig-{spec.name}"><h3>{html.escape(spec.title)}</h3>'
            f'<img class="figure" alt="{html.escape(spec.title)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(spec.caption)}</figcaption></figure>"
        )
        progress(spec.name)
    manifest = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in manifest_summary(data).items()
    )
    table = data.table
    n_ok = int((table.drop_duplicates("cell_id")["status"] == "ok").sum())
    n_cells = table["cell_id"].nunique()
    skipped_cells = skipped(table)
    failed_cells = failed(table)
    quality = data.quality.dropna(axis=1, how="all")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>specsweep: {html.escape(data.sweep)}</title>",
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>",
        f"<h1>specsweep: {html.escape(data.sweep)}</h1>",
        f'<p class="sub">{n_cells} cells ({n_ok} measured, {len(skipped_cells)} skipped, {len(failed_cells)} failed), {len(table)} rows; '
        f"built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        *([f'<p class="sub">{html.escape(kept)}</p>'] if (kept := provenance(table)) else []),
        "<h2>Summary: quant × drafter × k</h2>",
        "<p>tg t/s averaged over workload × concurrency rows; speedup is the geometric mean of per-row ratios to "
        "the same quant's no-drafter cell; acceptance pooled from counts.</p>",
        _table(summary(table, data.quality)),
        "<h2>Best k per quant, drafter, workload and concurrency</h2>",
        _table(best_k(table)),
        "<h2>Figures</h2>",
        *figures,
    ]
    if len(failed_cells):
        parts += ['<h2 class="failed">Failed cells</h2>', "<p>These cells ran and broke; their rows are missing above.</p>"]
        for r in failed_cells.itertuples():
            parts += [f"<h3>{html.escape(str(r.cell_id))}</h3><p>{html.escape(str(r.error))}</p>",
                      f"<pre>{html.escape(str(r.server_log_tail or ''))}</pre>"]  # fmt: skip
    if len(quality):
        parts += ["<h2>Quality per quant (in-process)</h2>", _table(quality, "{:.4f}")]
    parts += evals_section(data.evals)
    if len(memory := memory_per_cell(table)):
        parts += ["<h2>Memory per cell</h2>",
                  "<p>GiB. Weights: the served checkpoint's and the drafter's weight files on disk; checkpoint / model: "
                  "what vLLM logged it loaded (CPU: checkpoint size; GPU: weights in device memory); KV cache: the "
                  "memory vLLM gave it and its capacity in tokens, and how many requests of max_model_len tokens fit; "
                  "peak RSS: the largest sum over the server's processes while it served (pages they share counted "
                  "per process); PSS at end: shared pages split between them, after the workloads and evals.</p>", _table(memory, "{:.2f}")]  # fmt: skip
    if len(skipped_cells):
        parts += ["<h2>Skipped cells</h2>", _table(skipped_cells)]
    parts += ["<h2>Manifest</h2>", f"<dl>{manifest}</dl>", "<h2>Results table</h2>", _table(table), "</body></html>"]
    return "\n".join(parts)
