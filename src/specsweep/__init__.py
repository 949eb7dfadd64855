"""specsweep: reproducible quant x drafter x k sweeps for speculative decoding with vLLM."""

__version__ = "0.1.0"
