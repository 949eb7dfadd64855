"""Preflight: once per image, before any cell, check inside the image that its vLLM can serve what the cells ask.

An image older than what a cell needs (no Gemma 4 MTP before vLLM PR 41745, no `instanttensor` load format before
mid-April 2026, a parser it does not register) would otherwise fail every such cell after minutes of server start.
The probe runs the image's own Python (offline) and reads vLLM's own registries; the host compares them with the
cells' needs and writes one record: what the image has, and each problem with the fix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from specsweep.config.schema import CellCfg, ModelDrafter
from specsweep.images.base import ImageBackend
from specsweep.records.image import ImageRecord, Needs, PlannedArgvs, PreflightRecord, Problem
from specsweep.serve.argv import vllm_args
from specsweep.serve.speculative import cell_speculative_config

# Run inside the image (its Python, no specsweep): vLLM's own lists of what it supports.
PROBE = r"""
import importlib.util, json, typing, sys
import vllm
from vllm import _version
found = {"version": vllm.__version__, "commit": getattr(_version, "__commit_id__", None)}
try:
    found["build_metadata"] = open("/workspace/build-metadata.yaml").read()
except OSError:
    found["build_metadata"] = None

def literal_values(tp):
    out = []
    for arg in typing.get_args(tp):
        out += literal_values(arg) if typing.get_args(arg) else [arg]
    return out or list(typing.get_args(tp))

from vllm.config import speculative
found["methods"] = sorted({v for v in literal_values(speculative.SpeculativeMethod) if isinstance(v, str)})
from vllm.config.cache import CacheDType
found["kv_cache_dtypes"] = sorted(literal_values(CacheDType))
from vllm.model_executor import model_loader
found["load_formats"] = sorted(getattr(model_loader, "_LOAD_FORMAT_TO_MODEL_LOADER", {}))
from vllm.model_executor.models import ModelRegistry
found["architectures"] = sorted(ModelRegistry.get_supported_archs())
try:
    from vllm.tool_parsers import ToolParserManager
except ImportError:
    from vllm.entrypoints.openai.tool_parsers import ToolParserManager
found["tool_parsers"] = sorted(ToolParserManager.list_registered())
from vllm.reasoning import ReasoningParserManager
found["reasoning_parsers"] = sorted(ReasoningParserManager.list_registered())
try:
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
except ImportError:
    from vllm.attention.backends.registry import AttentionBackendEnum
found["attention_backends"] = sorted(member.name for member in AttentionBackendEnum)
found["speculative_fields"] = sorted(getattr(speculative.SpeculativeConfig, "__dataclass_fields__", {}))
found["packages"] = {name: importlib.util.find_spec(name) is not None for name in PACKAGES}
ARGV_PARSING
print(json.dumps(found))
"""

# The cells' argvs through vLLM's own CLI code (serve/vllm_cli_probe.py, without its stdin main), in the same process.
CLI_PROBE = Path(__file__).resolve().parents[1] / "serve" / "vllm_cli_probe.py"
# Paths for parsing only, made under a temporary directory where the probe runs: the model (the argv's checks need no
# weights, and an existing path keeps vLLM off the hub) and the project files an argv names (a chat template).
PREFLIGHT_ROOT = "/specsweep/preflight"
PLACEHOLDER_MODEL = f"{PREFLIGHT_ROOT}/model"


def _with_placeholder_files(argv: list[str], files: dict[str, str]) -> list[str]:
    """`argv` with each project file it names (`--chat-template`) replaced by a placeholder whose text goes in `files`:
    vLLM checks that the template exists, and the probe's container mounts nothing."""
    out = list(argv)
    for at, arg in enumerate(argv[:-1]):
        if arg == "--chat-template" and Path(argv[at + 1]).is_file():
            path = Path(argv[at + 1])
            placeholder = f"{PREFLIGHT_ROOT}/files/{path.name}"
            files[placeholder] = path.read_text()
            out[at + 1] = placeholder
    return out


def _argv_parsing(argvs: dict[str, list[str]], files: dict[str, str]) -> str:
    if not argvs:
        return ""
    # Without its stdin main and its __future__ import (which must open a file, not follow the probe's code).
    functions = CLI_PROBE.read_text().split('\nif __name__ == "__main__":')[0].replace("from __future__ import annotations\n", "")
    # The placeholders become real paths under a temporary directory: offline (HF_HUB_OFFLINE=1) a model path that does
    # not exist is looked up as a hub repo id and refused for its form, whatever the flags.
    return f"""{functions}
import os, tempfile
_root = tempfile.mkdtemp(prefix="specsweep-preflight-")
os.makedirs(_root + {PLACEHOLDER_MODEL!r})
for _path, _text in json.loads({json.dumps(json.dumps(files))}).items():
    os.makedirs(os.path.dirname(_root + _path), exist_ok=True)
    open(_root + _path, "w").write(_text)
_here = lambda arg: _root + arg if arg.startswith({PREFLIGHT_ROOT + "/"!r}) else arg
found["argv"] = {{cell: parse([_here(a) for a in argv]) for cell, argv in json.loads({json.dumps(json.dumps(argvs))}).items()}}
"""

# Python packages a feature needs at run time besides vLLM itself (vLLM registers the name either way).
PACKAGES_FOR = {
    ("method", "suffix"): ("arctic_inference", "arctic-inference"),
    ("load_format", "instanttensor"): ("instanttensor", "instanttensor"),
    ("load_format", "fastsafetensors"): ("fastsafetensors", "fastsafetensors"),
    ("load_format", "runai_streamer"): ("runai_model_streamer", "runai-model-streamer"),
    ("load_format", "runai_streamer_sharded"): ("runai_model_streamer", "runai-model-streamer"),
}


def planned_argvs(cells: Iterable[CellCfg], ids: Iterable[str]) -> PlannedArgvs:
    """Each cell's server arguments for the image's vLLM to parse, under the cell ids `ids` (the plan's)."""
    files: dict[str, str] = {}
    argvs = {cell_id: _with_placeholder_files([PLACEHOLDER_MODEL, *vllm_args(cell, 8000, model_is_local=True)], files)
             for cell_id, cell in zip(ids, cells, strict=True)}  # fmt: skip
    return PlannedArgvs(argvs=argvs, files=files)


def needs_of(cells: Iterable[CellCfg]) -> Needs:
    """What `cells` ask of their image's vLLM (registries, packages, PRs, backends)."""
    cells = list(cells)
    methods, formats, dtypes, tools, reasoning, archs, backends = set(), set(), set(), set(), set(), {}, set()
    prs: dict[int, set[str]] = {}
    for cell in cells:
        spec = cell_speculative_config(cell)
        if spec is not None:
            methods.add(json.loads(spec)["method"])
        serve = cell.serve
        for value, into in ((serve.load_format, formats), (serve.kv_cache_dtype, dtypes), (serve.tool_call_parser, tools),
                            (serve.reasoning_parser, reasoning)):  # fmt: skip
            if value is not None and value != "auto":
                into.add(value)
        drafter = cell.drafter
        if isinstance(drafter, ModelDrafter) and spec is not None:
            if drafter.vllm_architecture:
                archs[drafter.vllm_architecture] = drafter.vllm_pr
            for pr in drafter.vllm_prs_needed:
                prs.setdefault(pr, set()).add(drafter.name)
            backends |= {str(b) for b in (drafter.target_attention_backend, drafter.speculative_extra.get("attention_backend")) if b}
    return Needs(methods=sorted(methods), load_formats=sorted(formats), kv_cache_dtypes=sorted(dtypes),
                 tool_parsers=sorted(tools), reasoning_parsers=sorted(reasoning), architectures=dict(sorted(archs.items())),
                 prs={pr: sorted(names) for pr, names in sorted(prs.items())}, attention_backends=sorted(backends),
                 adaptive_verification=any(cell.adaptive_verification for cell in cells))  # fmt: skip


def compare(needs: Needs, found: dict, kind: ImageBackend, applied_prs: list[int] = ()) -> list[Problem]:
    """Problems of an image for the cells' needs: `found` is the probe's answer, `applied_prs` the PRs its build
    applied (from its build metadata)."""
    problems = []

    def missing(need: str, message: str, fix: str) -> None:
        problems.append(Problem(need=need, message=message, fix=fix))

    for need, registered, message, wanted in (
        ("method", "methods", "has no speculative method {!r}", "method {}"),
        ("load_format", "load_formats", "has no --load-format {}", "--load-format {}"),
        ("kv_cache_dtype", "kv_cache_dtypes", "has no --kv-cache-dtype {}", "kv-cache dtype {}"),
        ("tool_parser", "tool_parsers", "registers no tool-call parser {!r}", "the {} tool parser"),
        ("reasoning_parser", "reasoning_parsers", "registers no reasoning parser {!r}", "the {} reasoning parser"),
    ):
        for name in getattr(needs, registered):
            if name not in found[registered]:
                missing(f"{need}:{name}", "its vLLM " + message.format(name), kind.upgrade_fix(wanted.format(name)))
    for arch, pr in needs.architectures.items():
        if arch not in found["architectures"]:
            fix = kind.pr_fix(pr) if pr else kind.upgrade_fix(arch)
            missing(f"architecture:{arch}", f"its vLLM cannot load drafter architecture {arch}", fix)
    for pr, drafters in needs.prs.items():
        if pr not in applied_prs:
            missing(f"pr:{pr}", f"drafter {', '.join(drafters)} needs vLLM PR {pr}, which no vLLM release has merged and "
                    f"this image's build did not apply (it applied {list(applied_prs) or 'none'})", kind.pr_fix(pr))  # fmt: skip
    known_backends = {name.upper() for name in found.get("attention_backends", [])}
    for backend in needs.attention_backends:
        if backend.upper() not in known_backends:
            missing(f"attention_backend:{backend}", f"its vLLM has no attention backend {backend}",
                    kind.upgrade_fix(f"attention backend {backend}"))
    if needs.adaptive_verification and "enable_adaptive_verification" not in found.get("speculative_fields", []):
        missing("speculative:enable_adaptive_verification", "its vLLM has no adaptive verification "
                "(SpeculativeConfig.enable_adaptive_verification, vLLM PRs 47808 and 52228, v0.30.0)",
                kind.upgrade_fix("adaptive verification (v0.30.0 or later)"))  # fmt: skip
    for cell_id, result in found.get("argv", {}).items():
        if not result["ok"]:
            missing(f"argv:{cell_id}", f"its vLLM refuses cell {cell_id}'s server arguments ({result['error']})",
                    kind.upgrade_fix("these flags") + "; or drop the flag from the cell (serve.extra_args, the serve, "
                    "drafter or quant config that renders it; `specsweep config` shows the argv)")  # fmt: skip
    for (what, name), (module, distribution) in PACKAGES_FOR.items():
        wanted = needs.methods if what == "method" else needs.load_formats
        if name in wanted and not found["packages"].get(module):
            missing(f"package:{distribution}", f"{what.replace('_', ' ')} {name} needs the {distribution} package, which "
                    "the image lacks", f"add {distribution} to the image (image.requirements) or drop the {name} cells")  # fmt: skip
    return problems


def probe(kind: ImageBackend, record: ImageRecord, planned: PlannedArgvs | None = None) -> dict:
    program = PROBE.replace("PACKAGES", repr(sorted({module for module, _ in PACKAGES_FOR.values()})))
    program = program.replace("ARGV_PARSING", _argv_parsing(planned.argvs, planned.files) if planned else "")
    return kind.probe(record.location, program, f"the preflight probe of image {record.name}")


def run_preflight(kind: ImageBackend, record: ImageRecord, needs: Needs, planned: PlannedArgvs | None = None) -> PreflightRecord:
    started = time.monotonic()
    found = probe(kind, record, planned)
    return PreflightRecord(
        image=record.name,
        image_location=record.location,
        vllm_version=found["version"],
        vllm_commit=record.vllm_commit or found["commit"],
        vllm_prs=record.vllm_prs,
        needs=needs,
        problems=compare(needs, found, kind, record.vllm_prs),
        checked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        seconds=round(time.monotonic() - started, 1),
    )
