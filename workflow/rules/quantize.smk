rule quantize:
    """One checkpoint per (model, quant) in its own quantizer env; cached by content, recorded with its manifest."""
    input:
        model=lambda w: f"results/_models/{PLAN.quants[w.key].model_key}.json",
        data=lambda w: PLAN.quants[w.key].inputs,
        # Quantized inside the sweep's image (image.quantizer.where = image): that image first.
        image=lambda w: [f"results/_images/{PLAN.quants[w.key].image_key}.json"] if PLAN.quants[w.key].image_key else [],
    output:
        receipt="results/_quants/{key}.json",
    params:
        config=lambda w: PLAN.quants[w.key].job_json,
    log:
        job="results/_logs/quantize/{key}.log",
    resources:
        # Quantizing takes every core (the GPU on the Spark): never next to a cell being timed.
        model_server=1,
    run:
        specsweep_job(job_argv("quantize", receipt=output.receipt, model_receipt=input.model,
                               image_receipt=input.image[0] if input.image else None),
                      log.job, PLAN.quants[wildcards.key].job_json)  # fmt: skip


rule quant_quality:
    """Perplexity and KL divergence vs the base on held-out text: once per quant, whatever cells use it."""
    input:
        model=lambda w: f"results/_models/{PLAN.quants[w.key].model_key}.json",
        quant="results/_quants/{key}.json",
        text=lambda w: PLAN.quants[w.key].quality_inputs,
    output:
        record="results/_quality/{key}.json",
    params:
        quality=lambda w: PLAN.quants[w.key].quality_json,
    log:
        job="results/_logs/quant_quality/{key}.log",
    resources:
        model_server=1,
    run:
        specsweep_job(job_argv("quality", out=output.record, model_receipt=input.model, quant_receipt=input.quant),
                      log.job, PLAN.quants[wildcards.key].quality_json)  # fmt: skip
