"""llama-benchy's output formats: the markdown table users paste, its CSV, and its JSON schema."""

from __future__ import annotations

import csv
import io
import json

from specsweep.bench.runner import BenchReport
from specsweep.records.bench import BenchRow, Metric


def _suffix(report: BenchReport, run: BenchRow) -> str:
    depth = f" @ d{run.context_size}" if run.context_size > 0 else ""
    return depth + (f" (c{run.concurrency})" if report.max_concurrency > 1 else "")


def test_rows(report: BenchReport) -> list[dict]:
    """pp and tg rows per test, named like llama-benchy's (`pp2048 @ d4096 (c4)`, `tg128`)."""
    rows = []
    for run in report.benchmarks:
        suffix = _suffix(report, run)
        # A test whose every request failed keeps its rows (empty figures) so the failure shows.
        failed_all = run.errors.total > 0 and run.errors.used == 0
        if run.pp_throughput or failed_all:
            rows.append(_row(report.model, f"pp{run.prompt_size}{suffix}", run, "pp"))
        if run.tg_throughput or run.peak_throughput or failed_all:
            rows.append(_row(report.model, f"tg{run.response_size}{suffix}", run, "tg"))
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
        # Prompt-size warnings concern pp t/s only.
        "prompt_tokens_mismatch": run.prompt_tokens_mismatch if pp else None,
        "requests_without_usage": run.requests_without_usage if pp else 0,
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


def _warning_cell(row: dict) -> str:
    marks = []
    if row["prompt_tokens_mismatch"]:
        marks.append(f"prompt {row['prompt_tokens_mismatch'].relative_diff:+.1%}")
    if row["requests_without_usage"]:
        marks.append(f"no usage {row['requests_without_usage']}/{row['errors'].used}")
    return "; ".join(marks)


def _notes(report: BenchReport) -> list[str]:
    """One line per failed-request set or warning, below the table, naming the test."""
    notes = []
    for run in report.benchmarks:
        name = f"pp{run.prompt_size} tg{run.response_size}{_suffix(report, run)}"
        errors, mismatch = run.errors, run.prompt_tokens_mismatch
        if errors.failed:
            used = f"figures use the {errors.used} good ones" if errors.used else "no figures"
            notes.append(f"- {name}: {errors.failed} of {errors.total} requests failed, {used}: "
                         f"{'; '.join(errors.messages)}")  # fmt: skip
        if mismatch:
            notes.append(
                f"- {name}: the server counted {mismatch.server_tokens()} prompt tokens where the bench planned "
                f"{mismatch.client_tokens} ({mismatch.relative_diff:+.1%}, {mismatch.requests} of {mismatch.checked} "
                "requests); pp t/s uses the server's count. Pass the served model's tokenizer as --tokenizer."
            )
        if run.requests_without_usage:
            notes.append(f"- {name}: {run.requests_without_usage} of {errors.used} good requests sent no usage block; "
                         "their prompt size is the bench's own count, unconfirmed by the server")  # fmt: skip
    return notes


def markdown(report: BenchReport) -> str:
    """llama-benchy's columns, then specsweep's acceptance and error columns (and warnings, when any),
    then notes on failed requests and warnings below the table."""
    rows = test_rows(report)
    if not rows:
        return "No results collected. Check if the model is generating tokens."
    warned = any(_warning_cell(row) for row in rows)
    multi = report.max_concurrency > 1
    headers = ["model", "test", "t/s (total)" if multi else "t/s"]
    if multi:
        headers.append("t/s (req)")
    headers += ["peak t/s"] + (["peak t/s (req)"] if multi else []) + ["ttfr (ms)", "est_ppt (ms)", "e2e_ttft (ms)"]
    headers += ["accept", "accept len", "errors"] + (["warnings"] if warned else [])
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
            f"{row['errors'].failed}/{row['errors'].total} failed" if row["errors"].failed else "",
        ]
        if warned:
            cells.append(_warning_cell(row))
        data.append(cells)
    table = _pipe_table(headers, data, ["left"] + ["right"] * (len(headers) - 1))
    notes = _notes(report)
    return "\n\n".join([table, "\n".join(notes)]) if notes else table


CSV_HEADERS = [
    "model", "test_name", "t_s_mean", "t_s_std", "t_s_req_mean", "t_s_req_std", "peak_ts_mean", "peak_ts_std",
    "peak_ts_req_mean", "peak_ts_req_std", "ttfr_mean", "ttfr_std", "est_ppt_mean", "est_ppt_std",
    "e2e_ttft_mean", "e2e_ttft_std",
]  # fmt: skip
EXTRA_CSV_HEADERS = [
    "acceptance_rate", "mean_acceptance_length", "failed_requests", "total_requests", "prompt_tokens_rel_diff",
]  # fmt: skip


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
        mismatch = row["prompt_tokens_mismatch"]
        out["prompt_tokens_rel_diff"] = mismatch.relative_diff if mismatch else None
        writer.writerow(out)
    return buffer.getvalue()


def to_json(report: BenchReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2)


FORMATS = {"md": markdown, "csv": to_csv, "json": to_json}
