rule prepare_model:
    """Base weights as an HF dir vLLM can serve (cached by content; the receipt records where and what)."""
    output:
        receipt="results/_models/{key}.json",
    params:
        config=lambda w: PLAN.models[w.key].job_json,
    log:
        job="results/_logs/prepare_model/{key}.log",
    run:
        specsweep_job(job_argv("model", receipt=output.receipt), log.job, PLAN.models[wildcards.key].job_json)


rule prepare_drafter:
    """Hub drafter weights (MTP assistant, DFlash, EAGLE-3) downloaded into HF_HOME, pinned to a commit and checked,
    before any cell serves them; cells pass vLLM the local snapshot."""
    output:
        receipt="results/_drafters/{key}.json",
    params:
        config=lambda w: PLAN.drafters[w.key].job_json,
    log:
        job="results/_logs/prepare_drafter/{key}.log",
    run:
        specsweep_job(job_argv("drafter", receipt=output.receipt), log.job, PLAN.drafters[wildcards.key].job_json)
