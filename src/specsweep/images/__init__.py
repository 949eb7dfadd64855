"""Serving images: build or record the environment vLLM runs in, keyed by image kind (specsweep.images.base)."""
