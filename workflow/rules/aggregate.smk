rule aggregate:
    """One tidy table, a row per cell x workload."""
    input:
        bench=lambda w: [f"results/{w.sweep}/{cell_id}/bench.json" for cell_id in PLAN.cells],
    output:
        csv="results/{sweep}/table.csv",
        parquet="results/{sweep}/table.parquet",
    log:
        "results/_logs/aggregate/{sweep}.log",
    shell:
        "{PYTHON:q} -m specsweep.cli aggregate --csv {output.csv:q} --parquet {output.parquet:q} {input.bench:q}"
        " > {log:q} 2>&1"


onsuccess:
    print(f"specsweep: results table at results/{PLAN.sweep}/table.csv (and table.parquet)")
