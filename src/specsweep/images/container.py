"""Run vLLM in a container the way eugr/spark-vllm-docker's `launch-cluster.sh --solo` does, for every container kind.

Followed from launch-cluster.sh (the lines quoted at each flag below):
- the allocator and NCCL environment, the compile-cache mounts and HF_HOME mounted at /root/.cache/huggingface;
- host network, `--ipc=host`, `--privileged`, `--ulimit nofile`, `--gpus all` (per image config; CPU images turn the
  GPU parts off) and the entrypoint cleared;
- teardown with `docker stop` on exit, Ctrl-C and SIGTERM (the script's `trap cleanup EXIT INT TERM HUP`).
Different on purpose:
- vLLM is the container's command (`docker run ... vllm serve ...`), not `docker exec` into a `sleep infinity`
  container: the container then lives exactly as long as the server, its log is the server log, and a server that
  dies takes its container with it (`--rm`).
- Every container carries labels (the script sets none): the run's working directory and owner, and the cell, so a
  run that was SIGKILLed leaves nothing the next run cannot find and remove.
- A container of the same name is removed before the start (the script skips the launch and execs into it, which
  would measure the old server) unless a live run owns it.
- The server binds 127.0.0.1 on the host network (serve.host), where the script's vLLM listens on all interfaces.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import ClassVar

from specsweep.cache_check import CorruptEntry
from specsweep.config.compose import project_relative
from specsweep.config.schema import ContainerRun
from specsweep.images.base import ImageKind, ImageRecord, LaunchSpec
from specsweep.images.engine import EngineError, docker
from specsweep.serve.argv import ServerCommand, vllm_args
from specsweep.serve.reaper import owner_alive

LABEL_WORKDIR = "specsweep.workdir"
LABEL_OWNER = "specsweep.owner"
LABEL_CELL = "specsweep.cell"
CONTAINER_HF_HOME = "/root/.cache/huggingface"


def host_hf_home() -> Path:
    # launch-cluster.sh: HF_CACHE_DIR="${HF_HOME:-$HOME/.cache/huggingface}"
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def container_path(host_path: str) -> str:
    """Where a host file is inside the container: under the mounted HF_HOME, or at the same path (mounted read-only)."""
    path = Path(host_path)
    try:
        return str(Path(CONTAINER_HF_HOME) / path.resolve().relative_to(host_hf_home().resolve()))
    except ValueError:
        return host_path


def run_flags(run: ContainerRun) -> list[str]:
    """The `docker run` flags of launch-cluster.sh's solo mode, from the image's container config."""
    flags: list[str] = []
    if run.privileged:
        # docker_caps_args="--privileged"
        flags.append("--privileged")
    if run.nofile_limit is not None:
        # docker_resource_args="--ulimit nofile=${NOFILE_LIMIT}:${NOFILE_LIMIT} --ipc=host"
        flags += ["--ulimit", f"nofile={run.nofile_limit}:{run.nofile_limit}"]
    if run.ipc_host:
        flags.append("--ipc=host")
    if run.gpus:
        # docker_args_common="--gpus all -d --rm $docker_network_args --name $CONTAINER_NAME $docker_entrypoint_args ..."
        flags += ["--gpus", run.gpus]
    # local docker_network_args="--network host"; docker_entrypoint_args="--entrypoint="
    flags += ["--rm", "--network", "host", "--entrypoint="]
    # DOCKER_ARGS="-e NCCL_IGNORE_CPU_AFFINITY=1"; DOCKER_ARGS="$DOCKER_ARGS -e PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    # solo: LOCAL_IP="127.0.0.1" and get_env_flags adds -e VLLM_HOST_IP=$node_ip
    for key, value in sorted({"VLLM_HOST_IP": "127.0.0.1", **run.env}.items()):
        flags += ["-e", f"{key}={value}"]
    if run.mount_hf_home:
        # DOCKER_ARGS="$DOCKER_ARGS -v $HF_CACHE_DIR:/root/.cache/huggingface"
        flags += ["-v", f"{host_hf_home()}:{CONTAINER_HF_HOME}"]
    for relative in run.cache_mounts:
        # -v $HOME/.cache/vllm:/root/.cache/vllm (and flashinfer, .triton, .tilelang); made by before_start
        flags += ["-v", f"{Path.home() / relative}:/root/{relative}"]
    return flags + list(run.extra_args)


def container_command(
    run: ContainerRun,
    image_id: str,
    name: str,
    labels: dict[str, str],
    env: dict[str, str],
    forward_env: tuple[str, ...],
    read_only_paths: list[str],
    command: list[str],
    host: str,
    port: int,
    served_name: str,
) -> ServerCommand:
    """`docker run` of one server: argv only; forwarded secrets go by name (`-e NAME`), so `ps` never shows them."""
    argv = ["docker", "run", "--name", name, *run_flags(run)]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    for key, value in sorted(env.items()):
        argv += ["-e", f"{key}={value}"]
    # `-e NAME` without a value: docker copies it from its own environment (the server process's, see ServerCommand).
    for variable in forward_env:
        argv += ["-e", variable]
    for path in sorted(set(read_only_paths)):
        if container_path(path) == path:
            argv += ["-v", f"{path}:{path}:ro"]
    argv += [image_id, *command]
    # The docker client itself gets only the forwarded names; the other settings are in the container via `-e`.
    return ServerCommand(argv=argv, env={}, host=host, port=port, served_name=served_name, forward_env=forward_env)


def _inspect(name: str) -> dict[str, str] | None:
    found = docker("container", "inspect", "--format",
                   "{{.Id}}|{{.State.Status}}|{{index .Config.Labels \"" + LABEL_OWNER + "\"}}", name, check=False)  # fmt: skip
    if found.returncode != 0:
        return None
    container_id, status, owner = found.stdout.strip().split("|", 2)
    return {"id": container_id, "status": status, "owner": owner}


def remove_stale(name: str, owner: str, alive) -> None:
    """Remove a leftover container holding `name`, unless another live run owns it (then fail with how to fix)."""
    found = _inspect(name)
    if found is None:
        return
    if found["owner"] and found["owner"] != owner and alive(found["owner"]):
        raise EngineError(
            f"container {name} belongs to a live specsweep run (owner {found['owner']}); wait for it or stop it "
            f"(`docker stop {name}`)"
        )
    print(f"[container] removing stale container {name} ({found['id'][:12]}, {found['status']})", file=sys.stderr, flush=True)
    docker("rm", "-f", name)


def stop(name: str, timeout_s: int) -> None:
    """launch-cluster.sh's cleanup(): `docker stop "$CONTAINER_NAME"` (with --rm that also removes it); then make
    sure it is gone even if it was created but never started."""
    docker("stop", "-t", str(timeout_s), name, check=False)
    docker("rm", "-f", name, check=False)


def labelled(workdir: str) -> list[dict[str, str]]:
    """Containers (running or not) that specsweep started from `workdir`."""
    listed = docker("ps", "-a", "--filter", f"label={LABEL_WORKDIR}={workdir}", "--format",
                    "{{.Names}}|{{.Label \"" + LABEL_OWNER + "\"}}|{{.Label \"" + LABEL_CELL + "\"}}", check=False)  # fmt: skip
    if listed.returncode != 0:
        return []
    rows = []
    for line in listed.stdout.splitlines():
        name, owner, cell = line.split("|", 2)
        rows.append({"name": name, "owner": owner, "cell": cell})
    return rows


class ContainerKind(ImageKind):
    """What every container kind shares: Python probes in a throwaway container, the launcher, stale removal,
    teardown, and the image id as the thing a record names."""

    # The image's Python, and the command that starts vLLM given the model path (inside the container).
    python_path: ClassVar[str] = "python3"

    def entry(self, model_path: str) -> list[str]:
        raise NotImplementedError

    def python_at(self, image_id: str) -> list[str]:
        return ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", self.python_path, image_id, "-"]

    def server_command(self, record: ImageRecord, launch: LaunchSpec) -> ServerCommand:
        cell = launch.cell
        read_only = [launch.model_location] if Path(launch.model_location).is_absolute() else []
        if cell.model.chat_template:
            read_only.append(str(project_relative(cell.model.chat_template)))
        model_path = container_path(launch.model_location) if read_only else launch.model_location
        return container_command(
            self.cfg.container,
            record.location,
            launch.name,
            launch.labels,
            {**cell.serve.env, **launch.env},
            tuple(cell.serve.forward_env),
            read_only,
            [*self.entry(model_path), *vllm_args(cell, launch.port, launch.dtype)],
            cell.serve.host,
            launch.port,
            cell.model.served_name,
        )

    def before_start(self, record: ImageRecord, launch: LaunchSpec) -> None:
        # launch-cluster.sh runs `mkdir -p` on the cache dirs before `docker run` (docker would make them root-owned)
        run = self.cfg.container
        for host in [*(Path.home() / relative for relative in run.cache_mounts), *([host_hf_home()] if run.mount_hf_home else [])]:
            host.mkdir(parents=True, exist_ok=True)
        remove_stale(launch.name, launch.labels.get(LABEL_OWNER, ""), owner_alive)

    def stop(self, launch: LaunchSpec) -> None:
        stop(launch.name, self.cfg.container.stop_timeout_s)

    def check_intact(self, record: ImageRecord, receipt: str) -> None:
        if docker("image", "inspect", record.location, check=False).returncode != 0:
            raise CorruptEntry(
                f"image {record.name} ({record.location}) is no longer in the Docker engine; delete {receipt} and rerun "
                "(the build_image step builds it again)"
            )


def reap_containers(workdir: Path) -> list[dict[str, str]]:
    """Remove containers an earlier, killed run in `workdir` left (their owner is gone); none without docker."""
    if shutil.which("docker") is None:
        return []
    stale = [row for row in labelled(str(Path(workdir).resolve())) if not owner_alive(row["owner"])]
    for row in stale:
        print(f"specsweep: removing container {row['name']} (cell {Path(row['cell']).name}) left by a run that was killed",
              file=sys.stderr)  # fmt: skip
        docker("rm", "-f", row["name"], check=False)
    return stale
