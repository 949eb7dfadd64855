# Reports: report.html + tables.md, one W&B run per cell, the sweep's aggregate run and W&B report spec.
# W&B problems never fail these jobs (they are recorded in the receipts); see README "Reports".


rule report_files:
    """The static HTML report and the markdown tables, from the tidy table (and the k-advisor's predictions)."""
    input:
        table="results/{sweep}/table.csv",
        advice="results/{sweep}/advice.json",
    output:
        html=report("results/{sweep}/report.html", caption="../report/report.rst", category="Report"),
        markdown=report("results/{sweep}/tables.md", caption="../report/tables.rst", category="Report"),
    params:
        report=PLAN.report_json,
    log:
        job="results/_logs/report_files/{sweep}.log",
    run:
        specsweep_job(job_argv("report", sweep_dir=f"results/{wildcards.sweep}", html=output.html,
                               markdown=output.markdown, report_config=params.report), log.job)  # fmt: skip


rule wandb_cell:
    """One W&B run per cell; an unchanged cell keeps its run (the receipt records its content hash)."""
    input:
        table="results/{sweep}/table.csv",
        bench="results/{sweep}/{cell}/bench.json",
    output:
        receipt="results/{sweep}/{cell}/wandb.json",
    params:
        report=PLAN.report_json,
    log:
        job="results/_logs/wandb_cell/{sweep}/{cell}.log",
    run:
        specsweep_job(job_argv("wandb-cell", cell_dir=f"results/{wildcards.sweep}/{wildcards.cell}",
                               receipt=output.receipt, report_config=params.report), log.job)  # fmt: skip


rule wandb_sweep:
    """The W&B report spec and the sweep's aggregate run (table, quality table, report files)."""
    input:
        table="results/{sweep}/table.csv",
        receipts=lambda w: [f"results/{w.sweep}/{cell_id}/wandb.json" for cell_id in PLAN.cells],
        html="results/{sweep}/report.html",
        markdown="results/{sweep}/tables.md",
        advice="results/{sweep}/advice.json",
    output:
        receipt="results/{sweep}/wandb.json",
        spec="results/{sweep}/wandb_report.json",
    params:
        report=PLAN.report_json,
    log:
        job="results/_logs/wandb_sweep/{sweep}.log",
    run:
        specsweep_job(job_argv("wandb-sweep", sweep_dir=f"results/{wildcards.sweep}", receipt=output.receipt,
                               spec=output.spec, report_config=params.report), log.job)  # fmt: skip
