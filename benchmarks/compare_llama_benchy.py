"""Run llama-benchy 0.4.0 and `specsweep bench` against the same embedded vLLM server and print both tables.

llama-benchy needs its own venv (`python3 -m venv /tmp/lb && /tmp/lb/bin/pip install llama-benchy==0.4.0`).
It downloads its book unless cached; this script seeds its cache with the text specsweep ships, so both
tools cut prompts from the same public-domain text and nothing is fetched.

    .venv/bin/python benchmarks/compare_llama_benchy.py --llama-benchy /tmp/lb/bin/llama-benchy
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from specsweep.bench.corpus import DEFAULT_TEXT
from specsweep.cell import plan_launch
from specsweep.config.compose import compose_cell
from specsweep.images.base import build_image
from specsweep.models.prepare import prepare_model
from specsweep.paths import project_root
from specsweep.serve.server import VllmServer

LLAMA_BENCHY_BOOK_URL = "https://www.gutenberg.org/files/1661/1661-0.txt"


def seed_llama_benchy_cache() -> None:
    cache = Path.home() / ".cache" / "llama-benchy"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{hashlib.md5(LLAMA_BENCHY_BOOK_URL.encode()).hexdigest()}.txt"
    shutil.copyfile(project_root() / DEFAULT_TEXT, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-benchy", required=True, help="path to the llama-benchy executable")
    parser.add_argument("--pp", default="512")
    parser.add_argument("--tg", default="128")
    parser.add_argument("--depth", default="0")
    parser.add_argument("--runs", default="3")
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two tools this many times (CPU noise)")
    parser.add_argument("overrides", nargs="*", help="cell overrides, e.g. drafter=ngram k=4")
    args = parser.parse_args()

    cell = compose_cell(args.overrides).cell
    model = prepare_model(cell.model)
    image = build_image(cell.image)
    seed_llama_benchy_cache()
    # The server a cell of this config would start (its dtype, int4 kernel and env as the image's probe decided).
    command = plan_launch(cell, model.location, image, "compare", "llama-benchy", Path(tempfile.mkdtemp())).command
    log = Path("/tmp/specsweep-compare-server.log")
    common = ["--pp", args.pp, "--tg", args.tg, "--depth", args.depth, "--runs", args.runs, "--tokenizer", model.location]
    with VllmServer(command, log, startup_timeout_s=cell.serve.startup_timeout_s) as server:
        base = f"{server.base_url}/v1"
        what = " ".join(args.overrides) or "no drafter"
        for round_index in range(1, args.rounds + 1):
            print(f"\n# round {round_index}: llama-benchy 0.4.0 ({what})", flush=True)
            subprocess.run(
                [args.llama_benchy, "--base-url", base, "--model", cell.model.served_name, "--exact-tg",
                 "--skip-coherence", *common],
                check=True,
            )  # fmt: skip
            print(f"\n# round {round_index}: specsweep bench ({what})", flush=True)
            subprocess.run(
                [sys.executable, "-m", "specsweep.cli", "bench", "--base-url", base, "--model",
                 cell.model.served_name, "--endpoint", "chat", *common],
                check=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
