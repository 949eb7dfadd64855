"""Where the project, its config and the shared build cache live."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout holding conf/ and Snakefile.

    SPECSWEEP_ROOT wins; else the checkout this package was installed from (editable install);
    else the nearest parent of the working directory that has conf/config.yaml.
    """
    if env := os.environ.get("SPECSWEEP_ROOT"):
        return Path(env).resolve()
    source_checkout = Path(__file__).resolve().parents[2]
    if (source_checkout / "conf" / "config.yaml").is_file():
        return source_checkout
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if (parent / "conf" / "config.yaml").is_file():
            return parent
    raise FileNotFoundError(
        "cannot find the specsweep checkout (conf/config.yaml); run from the repo root or set SPECSWEEP_ROOT"
    )


def conf_dir() -> Path:
    return project_root() / "conf"


def project_relative(path: str) -> Path:
    """Config paths (prompt files, requirement files) are relative to the project root."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else project_root() / candidate


def input_path(path: str) -> str:
    """A project file as a Snakemake input: relative to the working directory when under it, so a copied or moved
    project keeps the inputs Snakemake recorded (an absolute path would change and rerun every job using it)."""
    absolute = project_relative(path)
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def cache_dir() -> Path:
    """Content-addressed environments and prepared models, shared by clones, CI runs and sweeps."""
    base = os.environ.get("SPECSWEEP_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "specsweep"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
