"""Run vLLM in a container the way eugr/spark-vllm-docker's `launch-cluster.sh --solo` does, for every container kind.

Followed from launch-cluster.sh (the lines quoted at each flag below):
- the allocator and NCCL environment, the compile-cache mounts and the HF_HOME mount;
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
- Every cache is mounted at its host path (HF_HOME and HOME set to them), where the script mounts them under /root:
  a container that runs as the calling user cannot enter /root, which is 0700 in Ubuntu-based images such as the
  Spark's.
- For a non-root caller every local container (server, quantize job) runs as that user (the script runs as root):
  what vLLM and the tools write into the mounted caches stays the user's, where root-owned files would be left in
  their home that they cannot delete. The mount sources are made by the caller first (docker would make them root's).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from specsweep.cache_check import CorruptEntry
from specsweep.config.schema import ContainerRun
from specsweep.docker_engine import EngineError, docker
from specsweep.images.base import ImageBackend, LaunchSpec
from specsweep.paths import project_relative
from specsweep.records.image import ImageRecord
from specsweep.serve.argv import ServerCommand, vllm_args
from specsweep.serve.reaper import OWNER_ENV, WORKDIR_ENV, owner_alive

LABEL_WORKDIR = "specsweep.workdir"
LABEL_OWNER = "specsweep.owner"
LABEL_CELL = "specsweep.cell"
def run_labels(what: str) -> dict[str, str]:
    """The labels on every container a run starts (a cell's server, a quantize job): the run's working directory,
    its owner (pid and start time), and what the container is for, so a later run can find and remove leftovers."""
    return {LABEL_CELL: what, LABEL_WORKDIR: os.environ.get(WORKDIR_ENV, str(Path.cwd().resolve())),
            LABEL_OWNER: os.environ.get(OWNER_ENV, "")}  # fmt: skip


def host_hf_home() -> Path:
    # launch-cluster.sh: HF_CACHE_DIR="${HF_HOME:-$HOME/.cache/huggingface}"
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def in_hf_home(host_path: str) -> bool:
    """Whether the HF_HOME mount already shows the path (every other input gets a read-only mount of its own)."""
    return Path(host_path).resolve().is_relative_to(host_hf_home().resolve())


def cluster_env(run: ContainerRun, node_ip: str) -> dict[str, str]:
    """launch-cluster.sh's get_env_flags: the node's address, and the cluster-network interfaces when known
    (solo mode leaves the interfaces empty; specsweep then omits them)."""
    env = {"VLLM_HOST_IP": node_ip}
    cluster = run.cluster
    if cluster.eth_if:
        for key in ("MN_IF_NAME", "UCX_NET_DEVICES", "NCCL_SOCKET_IFNAME", "OMPI_MCA_btl_tcp_if_include",
                    "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):  # fmt: skip
            env[key] = cluster.eth_if
    if cluster.ib_if:
        env.update(NCCL_IB_HCA=cluster.ib_if, NCCL_IB_DISABLE="0")
    return env


def run_flags(run: ContainerRun, node_ip: str = "127.0.0.1") -> list[str]:
    """The `docker run` flags of launch-cluster.sh, from the image's container config, for the node at `node_ip`."""
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
    # solo: LOCAL_IP="127.0.0.1"; get_env_flags adds -e VLLM_HOST_IP=$node_ip (and the interfaces)
    for key, value in sorted({**cluster_env(run, node_ip), **run.env}.items()):
        flags += ["-e", f"{key}={value}"]
    if run.mount_hf_home:
        # DOCKER_ARGS="$DOCKER_ARGS -v $HF_CACHE_DIR:/root/.cache/huggingface", at its host path instead (module doc)
        flags += ["-v", f"{host_hf_home()}:{host_hf_home()}", "-e", f"HF_HOME={host_hf_home()}"]
    if run.cache_mounts:
        # -v $HOME/.cache/vllm:/root/.cache/vllm (and flashinfer, .triton, .tilelang), at their host paths with HOME
        # pointing there, so vLLM, FlashInfer, Triton and TileLang find them as under the script; made by before_start
        for relative in run.cache_mounts:
            flags += ["-v", f"{Path.home() / relative}:{Path.home() / relative}"]
        flags += ["-e", f"HOME={Path.home()}"]
    return flags + list(run.extra_args)


def make_mount_sources(run: ContainerRun) -> None:
    """The host dirs run_flags mounts (the compile caches, HF_HOME), made by the caller: launch-cluster.sh runs
    `mkdir -p` on them before `docker run` (docker would make them root-owned)."""
    for host in [*(Path.home() / relative for relative in run.cache_mounts), *([host_hf_home()] if run.mount_hf_home else [])]:
        host.mkdir(parents=True, exist_ok=True)


def caller_flags(home: str | None, caller: tuple[int, int] | None = None) -> list[str]:
    """`--user` for a non-root caller (uid, gid; default: this process's), see the module doc, with HOME at `home`
    where run_flags sets none the user can use (the image's /root is closed to them). USER names the caller because
    the image has no passwd entry for it, and torch's compile cache asks getpass for a user name."""
    uid, gid = caller or (os.getuid(), os.getgid())
    if uid == 0:
        return []
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return ["--user", f"{uid}:{gid}", *(["-e", f"HOME={home}"] if home else []), "-e", f"USER={name}"]


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
    node_ip: str = "127.0.0.1",
    detach: bool = False,
    as_caller: bool = True,
) -> ServerCommand:
    """`docker run` of one server: argv only; forwarded secrets go by name (`-e NAME`), so `ps` never shows them.
    `as_caller`: a local container (a worker started over ssh runs as the script runs it there)."""
    argv = ["docker", "run", *(["-d"] if detach else []), "--name", name, *run_flags(run, node_ip)]
    if as_caller:
        # run_flags points HOME at the host home where it mounts the compile caches there
        argv += caller_flags(None if run.cache_mounts else "/tmp")
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    for key, value in sorted(env.items()):
        argv += ["-e", f"{key}={value}"]
    # `-e NAME` without a value: docker copies it from its own environment (the server process's, see ServerCommand).
    for variable in forward_env:
        argv += ["-e", variable]
    for path in sorted(set(read_only_paths)):
        if not (run.mount_hf_home and in_hf_home(path)):
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


class ContainerBackend(ImageBackend):
    """What every container kind shares: Python probes in a throwaway container, the launcher, stale removal,
    teardown, and the image id as the thing a record names."""

    # The image's Python, and the command that starts vLLM given the model path (inside the container).
    python_path: ClassVar[str] = "python3"

    def entry(self, model_path: str) -> list[str]:
        raise NotImplementedError

    def python_at(self, image_id: str) -> list[str]:
        return ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", self.python_path, image_id, "-"]

    def server_command(self, record: ImageRecord, launch: LaunchSpec) -> ServerCommand:
        nodes = self.cfg.container.cluster.nodes
        return self._node_command(record, launch, 0) if len(nodes) > 1 else self._node_command(record, launch, None)

    def _node_command(self, record: ImageRecord, launch: LaunchSpec, rank: int | None) -> ServerCommand:
        """The solo server (rank None), or one node of the multi-node group: launch-cluster.sh's no-Ray mode gives the
        head `--nnodes N --node-rank 0 --master-addr $HEAD_IP --master-port $MASTER_PORT` and each worker the same with
        its rank and `--headless`."""
        cell, run = launch.cell, self.cfg.container
        read_only = [launch.model_location] if launch.model_is_local else []
        if cell.model.chat_template:
            read_only.append(str(project_relative(cell.model.chat_template)))
        drafter = launch.drafter_location
        if drafter:
            read_only.append(drafter)
        args = [*self.entry(launch.model_location), *vllm_args(cell, launch.port, launch.dtype, launch.model_is_local,
                                                               drafter)]  # fmt: skip
        node_ip = "127.0.0.1"
        if rank is not None:
            nodes = run.cluster.nodes
            node_ip = nodes[rank]
            args += ["--nnodes", str(len(nodes)), "--node-rank", str(rank), "--master-addr", nodes[0],
                     "--master-port", str(run.cluster.master_port), *(["--headless"] if rank else [])]  # fmt: skip
        return container_command(
            run,
            record.location,
            launch.name,
            launch.labels,
            {**cell.serve.env, **launch.env},
            tuple(cell.serve.forward_env),
            read_only,
            args,
            cell.serve.host,
            launch.port,
            cell.model.served_name,
            node_ip=node_ip,
            detach=bool(rank),
            as_caller=not rank,
        )

    def worker_commands(self, record: ImageRecord, launch: LaunchSpec) -> list[list[str]]:
        """`docker run -d` of every worker node, over ssh (launch-cluster.sh: `ssh "$worker" "$docker_run_cmd"`).
        ssh hands the remote shell one string: every part is quoted, so JSON flags arrive intact. Forwarded secrets
        stay names (`-e NAME`): the worker's own environment supplies them."""
        nodes = self.cfg.container.cluster.nodes
        return [self._ssh(node, self._node_command(record, launch, rank).argv) for rank, node in enumerate(nodes) if rank]

    def _ssh(self, node: str, argv: list[str]) -> list[str]:
        user = self.cfg.container.cluster.ssh_user
        return ["ssh", "-o", "BatchMode=yes", f"{user}@{node}" if user else node, shlex.join(argv)]

    def before_start(self, record: ImageRecord, launch: LaunchSpec) -> None:
        make_mount_sources(self.cfg.container)
        remove_stale(launch.name, launch.labels.get(LABEL_OWNER, ""), owner_alive)
        for node, start in zip(self.cfg.container.cluster.nodes[1:], self.worker_commands(record, launch)):
            self._on_worker(node, ["docker", "rm", "-f", launch.name])
            print(f"[container] starting the worker on {node}", file=sys.stderr, flush=True)
            result = subprocess.run(start, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise EngineError(
                    f"starting the worker container on {node} failed: {result.stderr.strip()[-500:]}; check passwordless "
                    f"ssh to it and that it has image {record.location} (build-and-copy.sh --no-build -t TAG --copy-to {node})"
                )

    def stop(self, launch: LaunchSpec) -> None:
        stop(launch.name, self.cfg.container.stop_timeout_s)
        for node in self.cfg.container.cluster.nodes[1:]:
            # launch-cluster.sh's cleanup(): ssh "$worker" "docker stop $CONTAINER_NAME"
            self._on_worker(node, ["docker", "stop", "-t", str(self.cfg.container.stop_timeout_s), launch.name])
            self._on_worker(node, ["docker", "rm", "-f", launch.name])

    def _on_worker(self, node: str, argv: list[str]) -> None:
        subprocess.run(self._ssh(node, argv), capture_output=True, text=True, timeout=120, check=False)

    def job_command(self, image_id: str, name: str, what: str, argv: list[str], read_only: list[str],
                    writable: list[str], caller: tuple[int, int] | None = None) -> list[str]:  # fmt: skip
        """`docker run` of a one-off job (`argv`) in `image_id`, an image of this kind or one derived from it: the
        launcher's flags, the run's labels (`what` it is for), each path at itself. `caller` (uid, gid; default:
        this process's) decides whether it runs as that user."""
        run = self.cfg.container
        # HOME=/tmp: the tools write their own caches there, not into the mounted home (whose parents docker made)
        command = ["docker", "run", "--name", name, *run_flags(run), *caller_flags("/tmp", caller)]
        for key, value in sorted(run_labels(what).items()):
            command += ["--label", f"{key}={value}"]
        for path in sorted(set(writable)):
            command += ["-v", f"{path}:{path}"]
        for path in sorted(set(read_only)):
            if not (run.mount_hf_home and in_hf_home(path)):  # under HF_HOME: the launcher's HF_HOME mount has it
                command += ["-v", f"{path}:{path}:ro"]
        return [*command, image_id, *argv]

    def run_job(self, image_id: str, name: str, what: str, argv: list[str], read_only: list[str],
                writable: list[str]) -> int:  # fmt: skip
        """Run the job in a container; the container is gone when this returns or raises."""
        remove_stale(name, os.environ.get(OWNER_ENV, ""), owner_alive)
        make_mount_sources(self.cfg.container)
        for path in writable:
            Path(path).mkdir(parents=True, exist_ok=True)
        command = self.job_command(image_id, name, what, argv, read_only, writable)
        print(f"[container] $ {' '.join(command)}", file=sys.stderr, flush=True)
        try:
            return subprocess.run(command, stdin=subprocess.DEVNULL).returncode
        finally:
            stop(name, self.cfg.container.stop_timeout_s)

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
