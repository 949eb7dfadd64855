"""tg t/s of the embedded model's cells with and without the LD_PRELOAD vLLM's CPU docs recommend (tcmalloc +
Intel OpenMP), for no drafter and the ngram drafter, on the sweep's own workloads (bench=smoke).

    .venv/bin/python benchmarks/preload.py                 # 3 alternating rounds, bf16 base
    .venv/bin/python benchmarks/preload.py --rounds 2 quant=w4a16_gptq

Servers are started exactly as cells are (specsweep.cell.plan_launch); "without" drops LD_PRELOAD only. Rounds
alternate the order of the two variants so drift on the host does not favour one. Needs the image and model
built once (README command 1 builds them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from specsweep.cell import plan_launch, run_workloads
from specsweep.config.compose import compose_cell
from specsweep.images.base import build_image
from specsweep.models.prepare import prepare_model
from specsweep.serve.server import VllmServer

WARNINGS = ("libtcmalloc is not found in LD_PRELOAD", "without Intel OpenMP in LD_PRELOAD")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every cell (e.g. quant=...)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drafters", nargs="+", default=["drafter=none", "drafter=ngram k=4"])
    args = parser.parse_args()

    tg: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    warned: dict[tuple[str, str], bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for drafter in args.drafters:
                cfg = compose_cell([*args.overrides, *drafter.split()]).cell
                model, image = prepare_model(cfg.model), build_image(cfg.image)
                variants = ["with", "without"] if round_ % 2 == 0 else ["without", "with"]
                for variant in variants:
                    launch = plan_launch(cfg, model.location, image, "bench", "preload", Path(tmp))
                    if variant == "without":
                        launch.command.env.pop("LD_PRELOAD", None)
                    log = Path(tmp) / "server.log"
                    with VllmServer(launch.command, log, startup_timeout_s=600) as server:
                        records, _ = asyncio.run(run_workloads(server, cfg))
                    warned[(drafter, variant)] = any(w in log.read_text(errors="replace") for w in WARNINGS)
                    for record in records:
                        key = (drafter, f"{record.workload} c{record.concurrency}", variant)
                        tg[key].append(record.row.tg_throughput.mean)
                    print(f"round {round_ + 1}/{args.rounds} {drafter} {variant} LD_PRELOAD: "
                          + ", ".join(f"{r.workload} c{r.concurrency} {r.row.tg_throughput.mean:.1f}" for r in records),
                          flush=True)  # fmt: skip

    dtype = launch.serving.dtype if launch.serving else "auto"
    print(f"\ntg t/s, median of {args.rounds} rounds ({dtype}, {' '.join(args.overrides) or 'bf16 base'}); "
          f"preload: {launch.command.env.get('LD_PRELOAD', 'none configured')}")
    print("| drafter | workload | with LD_PRELOAD | without | with / without | vLLM warned (with / without) |")
    print("|---|---|---:|---:|---:|---|")
    for drafter in args.drafters:
        for workload in sorted({k[1] for k in tg if k[0] == drafter}):
            on, off = (statistics.median(tg[(drafter, workload, v)]) for v in ("with", "without"))
            print(f"| {drafter} | {workload} | {on:.1f} | {off:.1f} | {on / off:.2f} | "
                  f"{warned[(drafter, 'with')]} / {warned[(drafter, 'without')]} |")  # fmt: skip


if __name__ == "__main__":
    main()
