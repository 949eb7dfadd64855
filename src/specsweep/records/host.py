"""CPU facts and the serving choice they decide: recorded with images and manifests."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

# Native bf16 arithmetic: AVX512-BF16 dot products or AMX tiles. Without them torch emulates bf16 in fp32
# and bf16 is slower than fp32 (measured on the AVX2 hosts).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


FALLBACK_WNA16_KERNEL = "DequantWNA16FallbackKernel"


class CpuFacts(BaseModel):
    model: str
    flags: list[str]
    # From the cpuinfo itself (x86 lists `flags`, arm64 `Features`); records made before this field are all x86.
    arch: str = "x86_64"

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)

    @property
    def isa(self) -> str:
        """A short name for the vector ISA, for tables: avx512_bf16, avx512, avx2 or baseline."""
        if self.native_bf16:
            return "avx512_bf16" if "avx512_bf16" in self.flags else "amx_bf16"
        if "avx512f" in self.flags:
            return "avx512"
        return "avx2" if "avx2" in self.flags else "baseline"


class ServingChoice(BaseModel):
    """The dtype vLLM serves in and the kernel its W4A16 layers use on this host, each with the reason."""

    dtype: str
    dtype_reason: str
    wna16_kernel: str
    wna16_reason: str

    @property
    def fallback(self) -> bool:
        return self.wna16_kernel == FALLBACK_WNA16_KERNEL


def read_cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFacts:
    model, flags, arch = "unknown", "", "unknown"
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:  # not Linux: no flags known, so nothing native is assumed
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and model == "unknown":
            model = value.strip()
        elif name in ("flags", "Features") and not flags:
            flags, arch = value, "x86_64" if name == "flags" else "aarch64"
        if model != "unknown" and flags:
            break
    return CpuFacts(model=model, flags=sorted(set(flags.split())), arch=arch)
