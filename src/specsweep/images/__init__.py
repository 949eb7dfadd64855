"""Serving images: build or record the environment vLLM runs in, keyed by image kind."""

from specsweep.images.base import ImageRecord, build_image

__all__ = ["ImageRecord", "build_image"]
