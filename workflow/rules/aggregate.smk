rule aggregate:
    """One tidy table, a row per cell x workload; the quality table (per quant) and the evals table (per cell)."""
    input:
        bench=lambda w: [f"results/{w.sweep}/{cell_id}/bench.json" for cell_id in PLAN.cells],
        quality=[f"results/_quality/{key}.json" for key in PLAN.quants],
    output:
        csv="results/{sweep}/table.csv",
        parquet="results/{sweep}/table.parquet",
        quality="results/{sweep}/quality.csv",
        evals="results/{sweep}/evals.csv",
    log:
        job="results/_logs/aggregate/{sweep}.log",
    run:
        # The sweep dir: a narrowed run's table keeps the cells earlier runs measured (src/specsweep/records/earlier.py)
        specsweep_job(job_argv("aggregate", csv=output.csv, parquet=output.parquet, quality_csv=output.quality,
                               evals_csv=output.evals, quality=input.quality, sweep_dir=f"results/{wildcards.sweep}",
                               bench_files=input.bench), log.job)  # fmt: skip


rule sweep_status:
    """Last step: fails the run if any cell failed, naming each, once the table and reports are written."""
    input:
        bench=lambda w: [f"results/{w.sweep}/{cell_id}/bench.json" for cell_id in PLAN.cells],
        reports=[f"results/{{sweep}}/{name}" for name in ("table.csv", "report.html", "tables.md", "wandb.json", "wandb_report.json")],
    output:
        status="results/{sweep}/status.json",
    log:
        job="results/_logs/sweep_status/{sweep}.log",
    run:
        check_sweep(input.bench, output.status, log.job)


onstart:
    # How many cells this run measures, for the console's "cell i of N" lines (specsweep.cell_progress).
    begin_progress(sum(job.rule.name == "run_cell" for job in workflow.dag.needrun_jobs()))


onsuccess:
    print(run_notice(f"results/{PLAN.sweep}", RUN_STARTED))


onerror:
    print(f"specsweep: the run failed; whatever finished is under results/{PLAN.sweep}/ (see the errors above)")


rule advise:
    """The k-advisor: acceptance per position, the step-cost fit, predicted tg t/s for every k <= k_max and the
    recommended --speculative-config (with a batch-size schedule where the best k differs by concurrency)."""
    input:
        table="results/{sweep}/table.csv",
    output:
        advice="results/{sweep}/advice.json",
        markdown="results/{sweep}/advice.md",
    params:
        max_num_seqs=PLAN.max_num_seqs,
    log:
        job="results/_logs/advise/{sweep}.log",
    run:
        specsweep_job(job_argv("advise", sweep_dir=f"results/{wildcards.sweep}", out=output.advice,
                               max_num_seqs=params.max_num_seqs), log.job)  # fmt: skip
