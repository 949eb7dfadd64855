"""Task accuracy with lm-evaluation-harness against a cell's running server.

lm-eval runs in its own venv (workflow/envs/lm-eval.txt: lm_eval[api] and transformers for the tokenizer, no
torch): its pins must not move the orchestrator's, the server's or the model tools'. It talks to the cell's server
as `local-completions` (or `local-chat-completions`), with the served model's own tokenizer from its local dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from specsweep.atomic import write_text
from specsweep.config.schema import LmEvalCfg
from specsweep.config.secrets import server_environment
from specsweep.envs import ensure_env
from specsweep.exit_status import describe_exit
from specsweep.paths import project_relative, project_root
from specsweep.records.env import EnvRecord
from specsweep.records.evals import LmEvalRecord, LmEvalScore

LM_EVAL_REQUIREMENTS = "workflow/envs/lm-eval.txt"


def lm_eval_env() -> EnvRecord:
    return ensure_env("lm_eval", project_relative(LM_EVAL_REQUIREMENTS), check_import="lm_eval, transformers")


def lm_eval_argv(python: str, cfg: LmEvalCfg, base_url: str, model: str, tokenizer_dir: str, max_length: int | None,
                 output_dir: Path) -> list[str]:  # fmt: skip
    endpoint = "chat/completions" if cfg.model == "local-chat-completions" else "completions"
    model_args = {
        "model": model,
        "base_url": f"{base_url}/v1/{endpoint}",
        "tokenizer_backend": "huggingface",
        "tokenizer": tokenizer_dir,
        # Gemma scores garbage without BOS; lm-eval's HF tokenizer path adds it only when asked.
        "add_bos_token": "True",
        "num_concurrent": str(cfg.num_concurrent),
        "max_retries": "3",
        "timeout": str(int(cfg.request_timeout_s())),
        **({"max_length": str(max_length)} if max_length else {}),
    }
    argv = [
        python, "-m", "lm_eval", "run",
        "--model", cfg.model,
        "--model_args", ",".join(f"{key}={value}" for key, value in model_args.items()),
        "--tasks", ",".join(cfg.tasks),
        "--batch_size", str(cfg.batch_size),
        "--output_path", str(output_dir),
    ]  # fmt: skip
    if cfg.include_path:
        argv += ["--include_path", str(project_relative(cfg.include_path))]
    if cfg.num_fewshot is not None:
        argv += ["--num_fewshot", str(cfg.num_fewshot)]
    if cfg.limit is not None:
        argv += ["--limit", str(cfg.limit)]
    if cfg.max_gen_toks is not None:
        argv += ["--gen_kwargs", f"max_gen_toks={cfg.max_gen_toks}"]
    if cfg.model == "local-chat-completions":
        argv += ["--apply_chat_template"]
    return argv


def parse_results(results: dict) -> list[LmEvalScore]:
    scores = []
    samples = results.get("n-samples", {})
    for task, metrics in results["results"].items():
        for name, value in metrics.items():
            # "metric,filter" names only (lm-eval also reports e.g. sample_len there).
            if "," not in name or "_stderr," in name or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(name.replace(",", "_stderr,", 1))
            scores.append(LmEvalScore(
                task=task, metric=name, value=float(value),
                stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
                n_samples=(samples.get(task) or {}).get("effective"),
            ))  # fmt: skip
    return scores


def run(cfg: LmEvalCfg, base_url: str, model: str, tokenizer_dir: str, max_length: int | None, offline: bool,
        log: Path, results_copy: Path) -> LmEvalRecord:  # fmt: skip
    """Run lm-eval against the server; its log goes to `log`, its results JSON is kept at `results_copy`."""
    env = lm_eval_env()
    started = time.monotonic()
    common = dict(model=cfg.model, tasks=cfg.tasks, num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                  num_concurrent=cfg.num_concurrent, max_gen_toks=cfg.max_gen_toks, timeout_s=cfg.run_timeout_s(),
                  lm_eval_version=env.version_of("lm_eval"))  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="specsweep-lm-eval-"))
    try:
        argv = lm_eval_argv(str(env.python_bin), cfg, base_url, model, tokenizer_dir, max_length, scratch / "out")
        # The servers' rule for secrets holds here too: the caller's tokens and keys stay out (lm-eval would send
        # OPENAI_API_KEY to the server as a bearer token).
        settings = {"HF_DATASETS_CACHE": str(scratch / "datasets"), "TOKENIZERS_PARALLELISM": "false"}
        if offline:
            settings.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        environment = server_environment(dict(os.environ), forward=[], settings=settings)
        subset = f"the first {cfg.limit} questions of " if cfg.limit else ""
        print(f"[lm-eval] {subset}{', '.join(cfg.tasks)} against {base_url}, {cfg.num_concurrent} at a time, at most "
              f"{cfg.run_timeout_s():.0f} s (log: {log})", file=sys.stderr, flush=True)  # fmt: skip
        with open(log, "ab") as handle:
            # The project root: task YAMLs name their data files relative to it.
            result = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=environment, cwd=project_root(), timeout=cfg.run_timeout_s())  # fmt: skip
        files = sorted((scratch / "out").rglob("results_*.json"))
        if result.returncode != 0 or not files:
            return LmEvalRecord(status="failed", error=f"lm-eval failed ({describe_exit(result.returncode)}); see {log}",
                                wall_s=round(time.monotonic() - started, 1), **common)  # fmt: skip
        write_text(results_copy, files[-1].read_text())
        scores = parse_results(json.loads(files[-1].read_text()))
        return LmEvalRecord(status="ok", scores=scores, wall_s=round(time.monotonic() - started, 1), **common)
    except subprocess.TimeoutExpired:
        limit = f"timeout_s={cfg.timeout_s:g}" if cfg.timeout_s else f"its derived timeout ({cfg.run_timeout_s():.0f} s)"
        return LmEvalRecord(status="failed", error=f"lm-eval ran past eval.lm_eval.{limit}; see {log}",
                            wall_s=round(time.monotonic() - started, 1), **common)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
