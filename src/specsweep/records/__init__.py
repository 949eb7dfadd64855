"""Typed records: what every step writes and the next one reads (all through records.base.read_record).

One word for one thing:
- a **record** is any typed JSON file a step writes (a class here with its SCHEMA_VERSION);
- a **receipt** is the record a Snakemake stage writes as its output under results/_models, _quants, _images,
  _preflight, _drafters, _quality (and a W&B step's wandb.json): what the stage made and where it is. Jobs take
  their inputs' receipts (`--model-receipt`, ...) and write their own;
- a **manifest** says how to reproduce what it describes: a cell's manifest.json (code, config, image, weights,
  hardware, the server's argv) and a quant checkpoint's quant_manifest.json (recipe, calibration, files' sha256).
The cell's measurement itself is its cell record (bench.json).
"""
