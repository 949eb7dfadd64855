"""`specsweep compare A B`: the same cells in two sweeps (typically one sweep on two images), metric by metric, with
a change flagged only when it exceeds the run-to-run noise.

Cells are aligned by their resolved config (config.yaml) without the keys that differ by design: the image by
default (and the sweep's name, times and host, which are not in the config), plus `--ignore` keys; `--pair
quant=bf16,w4a16_gptq` compares A's bf16 cells with B's w4a16_gptq cells (the quant group aside, config equal). Rows are aligned
by workload and concurrency.

Noise and the tests used:
- throughputs and latencies (tg t/s and pp t/s per run, time to first token per request): Welch's two-sided t-test
  on the per-run (per-request) values of the two sides; with fewer than two values on a side there is no noise
  estimate and nothing is flagged ("n/a" in the table);
- acceptance rate: a two-sided two-proportion z-test on the accepted and drafted token counts.
The p-values of all tests of one comparison are corrected together (Holm), so a sweep compared with a rerun of itself
flags nothing with probability at least 1 - alpha, however many cells and metrics it has.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel
from scipy import stats

from specsweep.records.base import read_record
from specsweep.records.cell import CellRecord
from specsweep.suggest import did_you_mean

DEFAULT_IGNORED = ("image",)
# (metric, what the table calls it, where its values come from in a bench row, higher is better)
METRICS = (
    ("tg_tps", "tg t/s", "tg_throughput", True),
    ("pp_tps", "pp t/s", "pp_throughput", True),
    ("ttfr_ms", "TTFT ms", "ttfr", False),
)


class MetricChange(BaseModel):
    cell_a: str
    cell_b: str
    workload: str
    concurrency: int
    metric: str
    a: float
    b: float
    change_pct: float
    test: str
    n_a: int
    n_b: int
    p_value: float | None
    # After Holm's correction over every test of the comparison.
    flagged: bool = False
    better: bool | None = None


class Comparison(BaseModel):
    sweep_a: str
    sweep_b: str
    ignored: list[str]
    pair: list[str] | None
    alpha: float
    changes: list[MetricChange]
    only_in_a: list[str]
    only_in_b: list[str]
    # What differs between the two sides in the keys alignment ignored (e.g. the image), per aligned cell pair.
    differences: dict[str, list[str]]

    @property
    def flagged(self) -> list[MetricChange]:
        return [c for c in self.changes if c.flagged]


@dataclass(frozen=True)
class _Cell:
    cell_id: str
    config: dict
    record: CellRecord


def _load(sweep_dir: Path, only: tuple[str, ...] = ()) -> list[_Cell]:
    if not Path(sweep_dir).is_dir():
        raise ValueError(f"{sweep_dir} does not exist; give the results dir of a sweep that ran (e.g. results/embedded)")
    cells = []
    for directory in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        if only and directory.name not in only:
            continue
        if not (directory / "bench.json").is_file() or not (directory / "config.yaml").is_file():
            continue
        record = read_record(CellRecord, directory / "bench.json")
        if record.status == "ok":
            cells.append(_Cell(directory.name, yaml.safe_load((directory / "config.yaml").read_text()), record))
    if not cells:
        raise ValueError(f"{sweep_dir} has no measured cells (bench.json + config.yaml with status ok); run the sweep first")
    return cells


def _drop(config: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(last, None)


def _get(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _alignment_key(config: dict, ignored: list[str]) -> str:
    config = json.loads(json.dumps(config))
    for key in ignored:
        _drop(config, key)
    return json.dumps(config, sort_keys=True)


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts as dotted keys: a difference is then named to the leaf (which weight file, which CPU flag)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _diff(a: dict, b: dict) -> list[str]:
    old, new = flatten(a), flatten(b)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _welch(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        # No spread on either side: equal values are no change, different ones a certain one.
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _two_proportions(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float | None:
    if not n_a or not n_b:
        return None
    pooled = (hits_a + hits_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (hits_a / n_a - hits_b / n_b) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return float(2 * stats.norm.sf(abs(z)))


def _holm(changes: list[MetricChange], alpha: float) -> None:
    tested = sorted((c for c in changes if c.p_value is not None), key=lambda c: c.p_value)
    for rank, change in enumerate(tested):
        if change.p_value > alpha / (len(tested) - rank):
            break
        change.flagged = change.a != change.b


def _row_changes(a: _Cell, b: _Cell) -> list[MetricChange]:
    rows_b = {(w.workload, w.concurrency): w.row for w in b.record.workloads}
    out = []
    for workload in a.record.workloads:
        row_a, row_b = workload.row, rows_b.get((workload.workload, workload.concurrency))
        if row_b is None:
            continue
        where = dict(cell_a=a.cell_id, cell_b=b.cell_id, workload=workload.workload, concurrency=workload.concurrency)
        for metric, _, field, higher_is_better in METRICS:
            ma, mb = getattr(row_a, field), getattr(row_b, field)
            if ma is None or mb is None:
                continue
            change = 100 * (mb.mean / ma.mean - 1) if ma.mean else math.nan
            out.append(MetricChange(**where, metric=metric, a=ma.mean, b=mb.mean, change_pct=change,
                                    test="Welch t", n_a=len(ma.values), n_b=len(mb.values),
                                    p_value=_welch(ma.values, mb.values),
                                    better=(mb.mean > ma.mean) == higher_is_better if mb.mean != ma.mean else None))  # fmt: skip
        sa, sb = row_a.acceptance, row_b.acceptance
        if sa is not None and sb is not None and sa.draft_tokens and sb.draft_tokens:
            rate_a, rate_b = sa.accepted / sa.draft_tokens, sb.accepted / sb.draft_tokens
            out.append(MetricChange(**where, metric="acceptance_rate", a=rate_a, b=rate_b,
                                    change_pct=100 * (rate_b / rate_a - 1) if rate_a else math.nan,
                                    test="two-proportion z", n_a=sa.draft_tokens, n_b=sb.draft_tokens,
                                    p_value=_two_proportions(sa.accepted, sa.draft_tokens, sb.accepted, sb.draft_tokens),
                                    better=rate_b > rate_a if rate_b != rate_a else None))  # fmt: skip
    return out


def compare(sweep_a: Path, sweep_b: Path, ignore: list[str] = (), pair: tuple[str, str, str] | None = None,
            alpha: float = 0.05, only: tuple[str, ...] = ()) -> Comparison:  # fmt: skip
    """`only`: A's cells to compare (default all). `pair`: (config key, A's value, B's value), e.g. ("quant", "bf16", "w4a16_gptq"): a group is selected by its
    option's name and ignored whole (a quant's scheme and recipe differ with it), a plain key by its value."""
    ignored = [*DEFAULT_IGNORED, *ignore]
    cells_a, cells_b = _load(sweep_a, only), _load(sweep_b)
    known = {prefix for cell in cells_a + cells_b for key in flatten(cell.config)
             for prefix in _prefixes(key)}  # fmt: skip
    for flag, key in [*(("--ignore", key) for key in ignore), *((("--pair", pair[0]),) if pair else ())]:
        if key not in known:
            raise ValueError(f"{flag} {key}: no cell of either sweep has that config key{did_you_mean(key, known)}; "
                             "name a key of the cells' config.yaml, dotted (e.g. serve.max_num_seqs, quant)")  # fmt: skip
    if pair is not None:
        key, value_a, value_b = pair

        def chosen(cell: _Cell) -> str:
            value = _get(cell.config, key)
            return str(value.get("name") if isinstance(value, dict) else value)

        cells_a = [c for c in cells_a if chosen(c) == value_a]
        cells_b = [c for c in cells_b if chosen(c) == value_b]
        ignored.append(key)
    by_key_b = {_alignment_key(c.config, ignored): c for c in cells_b}
    changes, matched_b, differences = [], set(), {}
    only_a = []
    for cell in cells_a:
        other = by_key_b.get(_alignment_key(cell.config, ignored))
        if other is None:
            only_a.append(cell.cell_id)
            continue
        matched_b.add(other.cell_id)
        changes += _row_changes(cell, other)
        if diff := _diff(cell.config, other.config):
            differences[f"{cell.cell_id} | {other.cell_id}"] = diff
    _holm(changes, alpha)
    return Comparison(
        sweep_a=str(sweep_a), sweep_b=str(sweep_b), ignored=ignored, pair=list(pair) if pair else None, alpha=alpha,
        changes=changes, only_in_a=only_a, only_in_b=[c.cell_id for c in cells_b if c.cell_id not in matched_b],
        differences=differences,
    )  # fmt: skip


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _rows(comparison: Comparison) -> list[list[str]]:
    names = {metric: label for metric, label, _, _ in METRICS} | {"acceptance_rate": "acceptance"}
    rows = []
    for c in comparison.changes:
        digits = 3 if c.metric == "acceptance_rate" else 2
        verdict = ("better" if c.better else "worse") if c.flagged else ""
        cell = c.cell_a if c.cell_a == c.cell_b else f"{c.cell_a} → {c.cell_b}"
        rows.append([cell, c.workload, str(c.concurrency), names[c.metric], f"{c.a:.{digits}f}", f"{c.b:.{digits}f}",
                     f"{c.change_pct:+.1f}", f"{c.test} (n {c.n_a}/{c.n_b})", _p(c.p_value), verdict])  # fmt: skip
    return rows


HEADERS = ["cell", "workload", "c", "metric", "A", "B", "change %", "test", "p", "flag"]


def _intro(comparison: Comparison) -> list[str]:
    flagged = comparison.flagged
    lines = [f"A: {comparison.sweep_a}", f"B: {comparison.sweep_b}",
             f"Aligned by config, ignoring {', '.join(comparison.ignored)}"
             + (f"; pairing {comparison.pair[0]} {comparison.pair[1]} (A) with {comparison.pair[2]} (B)" if comparison.pair else ""),
             f"{len(flagged)} of {len(comparison.changes)} changes exceed the run-to-run noise (Welch's t-test per run, "
             f"two-proportion z-test for acceptance; Holm-corrected, alpha {comparison.alpha})."]  # fmt: skip
    if comparison.only_in_a:
        lines.append(f"Only in A: {', '.join(comparison.only_in_a)}")
    if comparison.only_in_b:
        lines.append(f"Only in B: {', '.join(comparison.only_in_b)}")
    return lines


def markdown(comparison: Comparison) -> str:
    from specsweep.bench.formats import _pipe_table

    parts = ["# specsweep compare", "", *(f"- {line}" for line in _intro(comparison)), ""]
    if comparison.differences:
        parts += ["## What differs in the ignored keys", ""]
        for pair, diff in comparison.differences.items():
            parts += [f"- `{pair}`: " + "; ".join(diff)]
        parts.append("")
    if comparison.flagged:
        flagged = [row for row, c in zip(_rows(comparison), comparison.changes) if c.flagged]
        parts += ["## Changes beyond the noise", "", _pipe_table(HEADERS, flagged, ["left"] * 4 + ["right"] * 6), ""]
    parts += ["## Every metric", "", _pipe_table(HEADERS, _rows(comparison), ["left"] * 4 + ["right"] * 6), ""]
    return "\n".join(parts)


def html_page(comparison: Comparison) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = []
    for row, change in zip(_rows(comparison), comparison.changes):
        style = ' class="flagged"' if change.flagged else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>")
    intro = "".join(f"<li>{html.escape(line)}</li>" for line in _intro(comparison))
    differences = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape('; '.join(v))}</li>"
                          for k, v in comparison.differences.items())  # fmt: skip
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>specsweep compare</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}td:nth-child(-n+4){text-align:left}tr.flagged{background:#fde2e2}"
        "</style></head><body><h1>specsweep compare</h1>"
        f"<ul>{intro}</ul>" + (f"<h2>What differs in the ignored keys</h2><ul>{differences}</ul>" if differences else "")
        + f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></body></html>\n"
    )
