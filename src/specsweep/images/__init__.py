"""Serving images: build or record the environment vLLM runs in, one backend per image kind (specsweep.images.base).

Importing the package registers every kind's backend. A new kind is one module here (its backend, registered with
@image_kind) plus its config class (specsweep.config.schema) and record details (specsweep.records.image).
"""

from specsweep.images import cpu_docker, cuda_docker, spark_docker, venv  # noqa: F401
