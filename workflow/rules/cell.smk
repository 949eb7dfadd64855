rule run_cell:
    """One server lifetime: start vLLM, run every workload, diff spec-decode counters, run the evals (greedy
    outputs, prompt logprobs, lm-eval where picked) against the same server, stop vLLM."""
    input:
        model=lambda w: f"results/_models/{PLAN.cells[w.cell].model_key}.json",
        quant=lambda w: f"results/_quants/{PLAN.cells[w.cell].quant_key}.json",
        image=lambda w: f"results/_images/{PLAN.cells[w.cell].image_key}.json",
        preflight=lambda w: f"results/_preflight/{PLAN.cells[w.cell].image_key}.json",
        drafter=lambda w: [f"results/_drafters/{key}.json"] if (key := PLAN.cells[w.cell].drafter_key) else [],
        prompts=lambda w: PLAN.cells[w.cell].prompt_files,
    output:
        bench="results/{sweep}/{cell}/bench.json",
        manifest="results/{sweep}/{cell}/manifest.json",
        config="results/{sweep}/{cell}/config.yaml",
    params:
        config=lambda w: PLAN.cells[w.cell].config_yaml,
        lm_eval=lambda w: PLAN.cells[w.cell].lm_eval,
    log:
        job="results/_logs/run_cell/{sweep}/{cell}.log",
        server="results/{sweep}/{cell}/server.log",
    resources:
        # At most one model server at a time: on CPU it needs the memory, on a GPU host the device.
        model_server=1,
    run:
        run_cell_job(PLAN.cells[wildcards.cell], input, output, log)
