rule aggregate:
    """One tidy table, a row per cell x workload."""
    input:
        bench=lambda w: [f"results/{w.sweep}/{cell_id}/bench.json" for cell_id in PLAN.cells],
        quality=[f"results/_quality/{key}.json" for key in PLAN.quants],
    output:
        csv="results/{sweep}/table.csv",
        parquet="results/{sweep}/table.parquet",
        quality="results/{sweep}/quality.csv",
    log:
        job="results/_logs/aggregate/{sweep}.log",
    run:
        specsweep_job(
            [
                "aggregate",
                "--csv", output.csv,
                "--parquet", output.parquet,
                "--quality-csv", output.quality,
                *[arg for record in input.quality for arg in ("--quality", record)],
                *input.bench,
            ],
            log.job,
        )  # fmt: skip


onsuccess:
    print(f"specsweep: results table at results/{PLAN.sweep}/table.csv (and table.parquet)")
    print(report_notice(f"results/{PLAN.sweep}"))
