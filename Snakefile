# specsweep: quant x drafter x k sweeps for speculative decoding.
# The grid comes from Hydra (conf/sweep/*.yaml + `--config overrides="..."`); see README.md.

include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/quantize.smk"
include: "workflow/rules/image.smk"
include: "workflow/rules/cell.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"results/{PLAN.sweep}/table.csv",
        f"results/{PLAN.sweep}/report.html",
        f"results/{PLAN.sweep}/tables.md",
        f"results/{PLAN.sweep}/wandb.json",
        f"results/{PLAN.sweep}/wandb_report.json",
        f"results/{PLAN.sweep}/status.json",
        f"results/{PLAN.sweep}/advice.json",
    default_target: True
