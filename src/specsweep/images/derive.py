"""Deriving an image from another: a builder container on the base with a wheelhouse mounted read-only, each step
run in it and logged, then committed under a tag and a key label.

The one sequence the CPU image (images/cpu_docker.py) and the quantizer's tools image (quantize/in_image.py) are
built by. The builder has no network (every install is offline, from the wheelhouse), and is removed whatever
happens, so a failed step leaves neither an image nor a container.
"""

from __future__ import annotations

import sys
from pathlib import Path

from specsweep.docker_engine import EngineError, docker, image_id
from specsweep.envs import run_logged


def derive_image(base: str, tag: str, key_label: str, key: str, wheels: Path, steps: list[tuple[str, list[str]]],
                 log: Path, changes: tuple[str, ...] = (), progress_tag: str = "image") -> str:  # fmt: skip
    """Run `steps` ((what, argv inside the builder), in order) on `base` and commit the result as `tag`; its id."""
    builder = f"specsweep-build-{tag.rpartition('/')[2].replace(':', '-')}"
    docker("rm", "-f", builder, check=False)
    try:
        docker("run", "-d", "--name", builder, "--network", "none", "--label", f"{key_label}={key}",
               "-v", f"{wheels}:/wheels:ro", "--entrypoint", "sleep", base, "infinity")  # fmt: skip
        for what, argv in steps:
            run_logged(["docker", "exec", builder, *argv], log, what, tag=progress_tag)
        docker("stop", "-t", "1", builder)
        print(f"[{progress_tag}] docker commit {tag}", file=sys.stderr, flush=True)
        docker("commit", *[part for change in changes for part in ("--change", change)],
               "--change", f"LABEL {key_label}={key}", builder, tag)  # fmt: skip
    finally:
        docker("rm", "-f", builder, check=False)
    found = image_id(tag)
    if found is None:
        raise EngineError(f"docker commit finished but no image is tagged {tag}; see {log}")
    return found
