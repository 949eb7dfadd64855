"""The DGX Spark image: eugr/spark-vllm-docker's build-and-copy.sh, driven from a pinned checkout, recorded by id.

The image spec (build repo and commit, --rebuild-vllm, the vLLM commit, each --apply-vllm-pr, extra flags) keys the
build and names it (`<image.tag>:<spec key>`): the id an unchanged spec built is reused for as long as the engine has
it, a changed spec builds a new image, and no build overwrites another's tag (most users launch `vllm-node`). Cells
run the recorded id.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from specsweep.atomic import write_json
from specsweep.config.schema import SparkDockerImage
from specsweep.docker_engine import EngineError, docker, require_engine
from specsweep.exit_status import describe_exit
from specsweep.images.base import image_kind, preview_record
from specsweep.images.container import ContainerBackend
from specsweep.paths import cache_dir
from specsweep.records.image import ImageRecord

BUILD_METADATA = "/workspace/build-metadata.yaml"
_SHA = re.compile(r"[0-9a-f]{40}")


def spec_key(image: SparkDockerImage) -> str:
    spec = image.model_dump(mode="json", include={"build_repo", "build_ref", "rebuild_vllm", "vllm_ref", "apply_vllm_prs", "build_args"})
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def built_tag(image: SparkDockerImage) -> str:
    return f"{image.tag}:{spec_key(image)}"


def build_argv(image: SparkDockerImage) -> list[str]:
    """build-and-copy.sh's own flags (its usage(): -t, --rebuild-vllm, --vllm-ref, --apply-vllm-pr, repeatable)."""
    argv = ["./build-and-copy.sh", "-t", built_tag(image)]
    if image.rebuild_vllm:
        argv.append("--rebuild-vllm")
    if image.vllm_ref:
        argv += ["--vllm-ref", image.vllm_ref]
    for pr in image.apply_vllm_prs:
        argv += ["--apply-vllm-pr", str(pr)]
    return argv + list(image.build_args)


def checkout_steps(image: SparkDockerImage, checkout: Path) -> list[list[str]]:
    steps = []
    if not (checkout / ".git").is_dir():
        steps.append(["git", "clone", f"https://github.com/{image.build_repo}.git", str(checkout)])
    else:
        steps.append(["git", "-C", str(checkout), "fetch", "--quiet", "origin"])
    steps.append(["git", "-C", str(checkout), "checkout", "--quiet", "--detach", image.build_ref])
    return steps


def parse_build_metadata(text: str) -> tuple[dict, str | None, list[int]]:
    """build-metadata.yaml (written by build-and-copy.sh's generate_build_metadata): the whole mapping, the vLLM
    commit and the PR numbers of build_args.vllm_prs (numbers or pull URLs, space separated)."""
    metadata = yaml.safe_load(text) or {}
    commit = metadata.get("vllm_commit")
    commit = None if commit in (None, "", "unknown") else str(commit)
    prs_text = str((metadata.get("build_args") or {}).get("vllm_prs") or "")
    prs = [int(match) for match in re.findall(r"(?:pull/)?(\d+)", prs_text)]
    return metadata, commit, prs


def check_built_spec(image: SparkDockerImage, metadata: dict, prs: list[int], image_id: str) -> None:
    """The image's build-metadata.yaml must name the vLLM ref and PRs the spec asked for (its build_args): an image
    built from something else (prebuilt wheels, an ignored ref) would give another vLLM's numbers under this spec.
    The ref, not vllm_commit, is compared: applying PRs can move the checkout's HEAD off the ref."""
    problems = []
    built_ref = str((metadata.get("build_args") or {}).get("vllm_ref") or "")
    if built_ref != image.vllm_ref:
        problems.append(f"was built from vLLM ref {built_ref or '(none recorded)'}, not image.vllm_ref={image.vllm_ref}")
    if missing := sorted(set(image.apply_vllm_prs) - set(prs)):
        problems.append(f"lacks vLLM PR(s) {missing} of image.apply_vllm_prs (its build applied {prs or 'none'})")
    if problems:
        raise EngineError(
            f"image {image_id[:19]} ({built_tag(image)}) {'; and '.join(problems)} (its {BUILD_METADATA}); delete it "
            f"(`docker rmi {built_tag(image)}`) and its receipt under {cache_dir() / 'images'}, then rerun so it is "
            "built from the spec"
        )


# Run inside the image: vLLM's version, what is installed (uv-built images may have no pip), the build metadata.
VERSION_PROBE = """
import importlib.metadata as md, json, sys
import vllm
try:
    metadata = open("BUILD_METADATA").read()
except OSError:  # an image build-and-copy.sh did not build (e.g. pulled)
    metadata = ""
print(json.dumps({"version": vllm.__version__, "python": sys.version.split()[0], "build_metadata": metadata,
                  "freeze": sorted(d.metadata["Name"] + "==" + d.version for d in md.distributions())}))
""".replace("BUILD_METADATA", BUILD_METADATA)


@image_kind("spark_docker")
class SparkDockerBackend(ContainerBackend):
    cfg: SparkDockerImage
    python_path = "python3"

    def entry(self, model_path: str) -> list[str]:
        return [*self.cfg.serve_command, model_path]

    def pr_fix(self, pr: int) -> str:
        return f"add image.apply_vllm_prs=[{pr}] (build-and-copy.sh --apply-vllm-pr {pr}) or image.rebuild_vllm=true"

    def upgrade_fix(self, what: str) -> str:
        return f"rebuild with image.rebuild_vllm=true (or image.vllm_ref=<a vLLM ref with {what}>)"

    def _built_id(self) -> tuple[str, float]:
        image = self.cfg
        if not _SHA.fullmatch(image.build_ref):
            raise EngineError(
                f"image.build_ref={image.build_ref!r} is not a commit sha: the same spec would build different images "
                f"as {image.build_repo} moves; pin a commit (`git ls-remote https://github.com/{image.build_repo} HEAD`)"
            )
        receipt = cache_dir() / "images" / f"{image.name}-{spec_key(image)}.json"
        if receipt.is_file():
            built = json.loads(receipt.read_text())["image_id"]
            if docker("image", "inspect", built, check=False).returncode == 0:
                return built, 0.0
        started = time.monotonic()
        checkout = cache_dir() / "build" / image.build_repo.replace("/", "__")
        checkout.parent.mkdir(parents=True, exist_ok=True)
        for step in [*checkout_steps(image, checkout), build_argv(image)]:
            print(f"[image] {' '.join(step)}", file=sys.stderr, flush=True)
            code = subprocess.run(step, cwd=checkout if step[0].startswith("./") else None).returncode
            if code != 0:
                raise EngineError(
                    f"`{' '.join(step)}` failed ({describe_exit(code)}; its output is above); for a checkout problem delete "
                    f"{checkout} and rerun, for a build problem see build-and-copy.sh's log or change the image spec"
                )
        built = docker("image", "inspect", "--format", "{{.Id}}", built_tag(image)).stdout.strip()
        write_json(receipt, {"image_id": built, "tag": built_tag(image), "spec": json.loads(image.model_dump_json())})
        return built, round(time.monotonic() - started, 1)

    def preview(self) -> ImageRecord:
        return preview_record(self.cfg.name, self.kind, f"<id of the image built from spec {spec_key(self.cfg)}>", self.cfg.offline)

    def build(self) -> ImageRecord:
        require_engine()
        image = self.cfg
        built, seconds = self._built_id()
        facts = self.probe(built, VERSION_PROBE, f"probing vLLM in image {built_tag(image)}")
        metadata, commit, prs = parse_build_metadata(facts["build_metadata"])
        check_built_spec(image, metadata, prs, built)
        return ImageRecord(
            name=image.name,
            kind=self.kind,
            location=built,
            vllm_version=facts["version"],
            vllm_commit=commit,
            vllm_prs=prs,
            build_metadata=metadata,
            key=spec_key(image),
            packages=facts["freeze"],
            build_seconds=seconds,
            built_at=docker("image", "inspect", "--format", "{{.Created}}", built).stdout.strip(),
            offline=image.offline,
            details={"tag": built_tag(image), "build_repo": image.build_repo, "build_ref": image.build_ref,
                     "build_command": build_argv(image), "python": facts["python"]},  # fmt: skip
        )
