"""Any NVIDIA host: the upstream CUDA vLLM image (vllm/vllm-openai), pulled rather than built, recorded by id.

`docker pull` runs only when the engine lacks the reference. The record names the image id every cell runs and the
registry digests the engine has for it (what the tag named when it was pulled); a tag moved since then is another
id, which the next pull would record. Served through the same launcher as the Spark image (container.py), without
--privileged.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

from specsweep.config.schema import CudaDockerImage
from specsweep.docker_engine import EngineError, docker, image_id, require_engine
from specsweep.exit_status import describe_exit
from specsweep.images.base import image_kind, preview_record
from specsweep.images.container import ContainerBackend
from specsweep.images.spark_docker import VERSION_PROBE
from specsweep.records.image import CudaDockerDetails, ImageRecord

# Run inside the image: its torch and the CUDA it was built for (a CPU-only torch cannot serve here), vLLM's commit.
CUDA_PROBE = """
import json, torch
from vllm import _version
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "commit": getattr(_version, "__commit_id__", None)}))
"""


def pull(reference: str) -> tuple[str, float]:
    """The id of `reference`, pulled first when the engine lacks it (docker's progress shown); (id, seconds)."""
    found = image_id(reference)
    if found:
        return found, 0.0
    started = time.monotonic()
    print(f"[image] docker pull {reference} (several GB the first time)", file=sys.stderr, flush=True)
    code = subprocess.run(["docker", "pull", reference]).returncode
    found = image_id(reference) if code == 0 else None
    if found is None:
        raise EngineError(
            f"`docker pull {reference}` failed ({describe_exit(code)}; docker's message is above): check that this host "
            f"reaches the registry (`docker pull {reference}` by hand; `docker login` for a private one) and that "
            "image.reference names an existing tag, or pull it elsewhere and `docker load` it here"
        )
    return found, round(time.monotonic() - started, 1)


@image_kind("cuda_docker")
class CudaDockerBackend(ContainerBackend):
    cfg: CudaDockerImage
    python_path = "python3"

    def entry(self, model_path: str) -> list[str]:
        return [*self.cfg.serve_command, model_path]

    def upgrade_fix(self, what: str) -> str:
        return f"pull a vLLM release that has {what} (image.reference=vllm/vllm-openai:<that release>)"

    def pr_fix(self, pr: int) -> str:
        return f"use an image whose vLLM includes vLLM PR {pr} (image.reference=<a vLLM image built with it>)"

    def key(self) -> str:
        return hashlib.sha256(self.cfg.reference.encode()).hexdigest()[:16]

    def preview(self) -> ImageRecord:
        return preview_record(self.cfg.name, self.kind, f"<id of {self.cfg.reference}>", self.cfg.offline)

    def build(self) -> ImageRecord:
        require_engine()
        image = self.cfg
        found, seconds = pull(image.reference)
        facts = self.probe(found, VERSION_PROBE, f"probing vLLM in {image.reference}")
        cuda = self.probe(found, CUDA_PROBE, f"probing torch in {image.reference}")
        if not cuda["cuda"]:
            raise EngineError(
                f"image {image.reference} has a torch without CUDA ({cuda['torch']}): it cannot serve on a GPU; set "
                "image.reference to a CUDA vLLM image (vllm/vllm-openai:<release>)"
            )
        inspected = json.loads(docker("image", "inspect", found).stdout)[0]
        return ImageRecord(
            name=image.name,
            kind=self.kind,
            location=found,
            vllm_version=facts["version"],
            vllm_commit=cuda["commit"],
            key=self.key(),
            packages=facts["freeze"],
            build_seconds=seconds,
            built_at=inspected.get("Created", ""),
            offline=image.offline,
            details=CudaDockerDetails(reference=image.reference, repo_digests=inspected.get("RepoDigests") or [],
                                      python=facts["python"], torch=cuda["torch"], cuda=cuda["cuda"]),  # fmt: skip
        )
