rule prepare_model:
    """Base weights as an HF dir vLLM can serve (cached by content; the receipt records where and what)."""
    output:
        receipt="results/_models/{key}.json",
    params:
        config=lambda w: PLAN.models[w.key].config_yaml,
        overrides=lambda w: PLAN.models[w.key].overrides,
    log:
        "results/_logs/prepare_model/{key}.log",
    shell:
        "{PYTHON:q} -m specsweep.cli model prepare --receipt {output.receipt:q} {params.overrides:q} > {log:q} 2>&1"
