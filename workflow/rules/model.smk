rule prepare_model:
    """Base weights as an HF dir vLLM can serve (cached by content; the receipt records where and what)."""
    output:
        receipt="results/_models/{key}.json",
    params:
        config=lambda w: PLAN.models[w.key].config_yaml,
    log:
        job="results/_logs/prepare_model/{key}.log",
    run:
        specsweep_job(["model", "prepare", "--receipt", output.receipt, *PLAN.models[wildcards.key].overrides], log.job)
