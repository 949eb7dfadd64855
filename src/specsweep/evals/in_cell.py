"""The evals a cell runs against its own server after the workloads, before it stops (no extra server start)."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from specsweep.config.schema import CellCfg
from specsweep.evals import endpoint, lm_eval, lossless
from specsweep.records.evals import CellEvals

LM_EVAL_LOG = "lm_eval.log"
LM_EVAL_RESULTS = "lm_eval_results.json"


def runs_endpoint_quality(cfg: CellCfg) -> bool:
    """Prompt logprobs on each quant's no-drafter cell: the quant's distribution, not the drafter's business."""
    return cfg.eval.endpoint_quality is not None and cfg.drafter.kind == "none"


def run_evals(cfg: CellCfg, base_url: str, model: str, tokenizer_dir: str, out_dir: Path, with_lm_eval: bool,
              offline: bool) -> CellEvals:  # fmt: skip
    evals = CellEvals()
    timeout = cfg.bench.request_timeout_s
    steps = []
    if cfg.eval.lossless is not None:
        steps.append(("lossless", lambda: {"greedy": lossless.generate(base_url, model, cfg.eval.lossless, tokenizer_dir, timeout)}))
    if runs_endpoint_quality(cfg):
        steps.append(("endpoint quality", lambda: {"endpoint_quality": endpoint.score(
            base_url, model, tokenizer_dir, cfg.eval.endpoint_quality, out_dir, timeout)}))  # fmt: skip
    if with_lm_eval and cfg.eval.lm_eval is not None:
        steps.append(("lm-eval", lambda: {"lm_eval": lm_eval.run(
            cfg.eval.lm_eval, base_url, model, tokenizer_dir, cfg.serve.max_model_len, offline, out_dir / LM_EVAL_LOG,
            out_dir / LM_EVAL_RESULTS)}))  # fmt: skip
    for index, (name, step) in enumerate(steps, 1):
        print(f"[eval] {index}/{len(steps)} {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            evals = evals.model_copy(update=step())
        except Exception as err:  # noqa: BLE001 - an eval that breaks is recorded; the cell's figures stand
            traceback.print_exc()
            evals = evals.model_copy(update={"errors": [*evals.errors, f"{name}: {err!r}"]})
        evals = evals.model_copy(update={"wall_s": {**evals.wall_s, name: round(time.monotonic() - started, 1)}})
        print(f"[eval] {name}: {evals.wall_s[name]} s", file=sys.stderr, flush=True)
    # An lm-eval run that failed or ran past its timeout stays on evals.lm_eval (status and error) and does not fail
    # the cell: its throughput figures stand (a 31B's long eval must not cost them on every rerun).
    return evals
