rule aggregate:
    """One tidy table, a row per cell x workload."""
    input:
        bench=lambda w: [f"results/{w.sweep}/{cell_id}/bench.json" for cell_id in PLAN.cells],
    output:
        csv="results/{sweep}/table.csv",
        parquet="results/{sweep}/table.parquet",
    log:
        job="results/_logs/aggregate/{sweep}.log",
    run:
        specsweep_job(["aggregate", "--csv", output.csv, "--parquet", output.parquet, *input.bench], log.job)


onsuccess:
    print(f"specsweep: results table at results/{PLAN.sweep}/table.csv (and table.parquet)")
    print(report_notice(f"results/{PLAN.sweep}"))
