"""llama-benchy's output formats: the markdown table users paste, its CSV, and its JSON schema."""

from __future__ import annotations

import csv
import io
import json

from specsweep.bench.engine import BenchReport, BenchRow
from specsweep.bench.stats import Metric


def test_rows(report: BenchReport) -> list[dict]:
    """pp and tg rows per test, named like llama-benchy's (`pp2048 @ d4096 (c4)`, `tg128`)."""
    rows = []
    for run in report.benchmarks:
        depth = f" @ d{run.context_size}" if run.context_size > 0 else ""
        conc = f" (c{run.concurrency})" if report.max_concurrency > 1 else ""
        if run.pp_throughput:
            rows.append(_row(report.model, f"pp{run.prompt_size}{depth}{conc}", run, "pp"))
        if run.tg_throughput or run.peak_throughput:
            rows.append(_row(report.model, f"tg{run.response_size}{depth}{conc}", run, "tg"))
    return rows


def _row(model: str, name: str, run: BenchRow, kind: str) -> dict:
    pp = kind == "pp"
    return {
        "model": model,
        "test_name": name,
        "t_s": run.pp_throughput if pp else run.tg_throughput,
        "t_s_req": run.pp_req_throughput if pp else run.tg_req_throughput,
        "peak_ts": None if pp else run.peak_throughput,
        "peak_ts_req": None if pp else run.peak_req_throughput,
        "ttfr": run.ttfr if pp else None,
        "est_ppt": run.est_ppt if pp else None,
        "e2e_ttft": run.e2e_ttft if pp else None,
        "acceptance": None if pp else run.acceptance,
        "errors": run.errors,
    }


def _fmt(value: Metric | None) -> str:
    return "" if value is None else f"{value.mean:.2f} ± {value.std:.2f}"


def _pipe_table(headers: list[str], data: list[list[str]], align: list[str]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in data)) if data else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if a == "left" else c.rjust(w) for c, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        (":" + "-" * (w + 1)) if a == "left" else ("-" * (w + 1) + ":") for w, a in zip(widths, align)
    ) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in data)])


def markdown(report: BenchReport) -> str:
    """llama-benchy's columns, then specsweep's acceptance and error columns."""
    rows = test_rows(report)
    if not rows:
        return "No results collected. Check if the model is generating tokens."
    multi = report.max_concurrency > 1
    headers = ["model", "test", "t/s (total)" if multi else "t/s"]
    if multi:
        headers.append("t/s (req)")
    headers += ["peak t/s"] + (["peak t/s (req)"] if multi else []) + ["ttfr (ms)", "est_ppt (ms)", "e2e_ttft (ms)"]
    headers += ["accept", "accept len", "errors"]
    data = []
    for row in rows:
        cells = [row["model"], row["test_name"], _fmt(row["t_s"])]
        if multi:
            cells.append(_fmt(row["t_s_req"]))
        cells.append(_fmt(row["peak_ts"]))
        if multi:
            cells.append(_fmt(row["peak_ts_req"]))
        cells += [_fmt(row["ttfr"]), _fmt(row["est_ppt"]), _fmt(row["e2e_ttft"])]
        acceptance = row["acceptance"]
        rate = acceptance.acceptance_rate if acceptance else None
        length = acceptance.mean_acceptance_length if acceptance else None
        cells += [
            "" if rate is None else f"{rate:.3f}",
            "" if length is None else f"{length:.2f}",
            f"{row['errors'].failed}/{row['errors'].total}" if row["errors"].failed else "",
        ]
        data.append(cells)
    return _pipe_table(headers, data, ["left"] + ["right"] * (len(headers) - 1))


CSV_HEADERS = [
    "model", "test_name", "t_s_mean", "t_s_std", "t_s_req_mean", "t_s_req_std", "peak_ts_mean", "peak_ts_std",
    "peak_ts_req_mean", "peak_ts_req_std", "ttfr_mean", "ttfr_std", "est_ppt_mean", "est_ppt_std",
    "e2e_ttft_mean", "e2e_ttft_std",
]  # fmt: skip
EXTRA_CSV_HEADERS = ["acceptance_rate", "mean_acceptance_length", "failed_requests", "total_requests"]


def to_csv(report: BenchReport) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_HEADERS + EXTRA_CSV_HEADERS)
    writer.writeheader()
    for row in test_rows(report):
        out: dict = {"model": row["model"], "test_name": row["test_name"]}
        for key in ("t_s", "t_s_req", "peak_ts", "peak_ts_req", "ttfr", "est_ppt", "e2e_ttft"):
            value = row[key]
            out[f"{key}_mean"] = value.mean if value else None
            out[f"{key}_std"] = value.std if value else None
        acceptance = row["acceptance"]
        out["acceptance_rate"] = acceptance.acceptance_rate if acceptance else None
        out["mean_acceptance_length"] = acceptance.mean_acceptance_length if acceptance else None
        out["failed_requests"] = row["errors"].failed
        out["total_requests"] = row["errors"].total
        writer.writerow(out)
    return buffer.getvalue()


def to_json(report: BenchReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2)


FORMATS = {"md": markdown, "csv": to_csv, "json": to_json}
