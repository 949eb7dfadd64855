rule quantize:
    """One checkpoint per (model, quant) in its own quantizer env; cached by content, recorded with its manifest."""
    input:
        model=lambda w: f"results/_models/{PLAN.quants[w.key].model_key}.json",
        data=lambda w: PLAN.quants[w.key].inputs,
    output:
        receipt="results/_quants/{key}.json",
    params:
        config=lambda w: PLAN.quants[w.key].config_yaml,
        overrides=lambda w: PLAN.quants[w.key].overrides,
    log:
        job="results/_logs/quantize/{key}.log",
    run:
        specsweep_job(
            ["quant", "run", "--receipt", output.receipt, "--model-receipt", input.model, *params.overrides], log.job
        )


rule quant_quality:
    """Perplexity and KL divergence vs the base on held-out text: once per quant, whatever cells use it."""
    input:
        model=lambda w: f"results/_models/{PLAN.quants[w.key].model_key}.json",
        quant="results/_quants/{key}.json",
        text=lambda w: PLAN.quants[w.key].quality_inputs,
    output:
        record="results/_quality/{key}.json",
    params:
        quality=lambda w: PLAN.quants[w.key].quality_yaml,
        overrides=lambda w: PLAN.quants[w.key].overrides,
    log:
        job="results/_logs/quant_quality/{key}.log",
    run:
        specsweep_job(
            [
                "quant", "quality",
                "--out", output.record,
                "--model-receipt", input.model,
                "--quant-receipt", input.quant,
                *params.overrides,
            ],
            log.job,
        )  # fmt: skip
