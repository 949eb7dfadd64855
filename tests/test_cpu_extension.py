"""Which build of vLLM's CPU extension loads, the check that it does, and what a crashed check says.

The slow tests run the image build's own check (`check_argv`) with the host's vLLM env: natively, on an emulated
AVX2-only CPU (qemu-user with a Haswell model: no AVX-512, as on the project's AVX2 EPYC hosts), and with a system
library the extension needs made unloadable, so each CPU kind and the failure it must catch run for real here.
"""

from __future__ import annotations

import json
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import require_component

from specsweep.config.compose import compose_cell
from specsweep.envs import run_logged
from specsweep.exit_status import describe_exit, signal_of
from specsweep.images.base import build_image
from specsweep.images.cpu_extension import NATIVE_WNA16_EXTENSIONS, check_argv, expected_extension, expects_native_wna16
from specsweep.records.host import CpuFacts, read_cpu_facts

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
AVX2 = read_cpu_facts(CPUINFO / "xeon_avx2.txt")
EPYC = read_cpu_facts(CPUINFO / "epyc_avx512_bf16.txt")
XEON_BF16 = read_cpu_facts(CPUINFO / "xeon_avx512_bf16.txt")
ARM64 = read_cpu_facts(CPUINFO / "arm64_cortex_x925.txt")
SKYLAKE = CpuFacts(model="Intel Xeon Gold 6148", flags=sorted(set(AVX2.flags) | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}))
# Knights Landing: AVX-512F without VL/BW/DQ. torch's _is_avx512_supported() wants all four, so vLLM loads _C_AVX2.
KNL = CpuFacts(model="Intel Xeon Phi 7210", flags=sorted(set(AVX2.flags) | {"avx512f", "avx512cd", "avx512er", "avx512pf"}))

# What the module under test imports by name on an AVX2 host: the check the image build ran before this fix.
IMPORT_BY_NAME = "import torch, vllm, vllm._C"


@pytest.mark.parametrize(
    ("cpu", "extension", "native"),
    [(AVX2, "_C_AVX2", False), (KNL, "_C_AVX2", False), (SKYLAKE, "_C_AVX512", True), (EPYC, "_C", True),
     (XEON_BF16, "_C", True), (ARM64, "_C", False), (CpuFacts(model="?", flags=[], arch="unknown"), None, False)],  # fmt: skip
    ids=["xeon_avx2", "knights_landing", "skylake", "epyc_bf16", "xeon_bf16", "arm64", "unknown"],
)
def test_the_extension_follows_vllms_choice_per_cpu(cpu: CpuFacts, extension: str | None, native: bool) -> None:
    # vllm/platforms/cpu.py import_kernels (0.32): avx512 (f+vl+bw+dq) and avx512_bf16 -> _C, avx512 -> _C_AVX512,
    # else _C_AVX2; off x86 the single _C, which on aarch64 has no cpu_gemm_wna16 (read from the 0.32.0 wheel).
    assert expected_extension(cpu) == extension
    assert expects_native_wna16(cpu) is native


def test_cpuinfo_names_its_architecture() -> None:
    assert [cpu.arch for cpu in (AVX2, EPYC, XEON_BF16, ARM64)] == ["x86_64", "x86_64", "x86_64", "aarch64"]
    assert ARM64.model == "unknown" and {"sve2", "bf16", "i8mm"} <= set(ARM64.flags)


@pytest.mark.parametrize(("returncode", "name"), [(-4, "SIGILL"), (132, "SIGILL"), (-11, "SIGSEGV"), (137, "SIGKILL")])
def test_a_signal_is_named_with_what_it_means(returncode: int, name: str) -> None:
    # Python reports a signal as -N; a shell, docker exec and qemu-user as 128 + N.
    text = describe_exit(returncode)
    assert text.startswith(f"killed by {name} (exit {returncode}): ")
    if name == "SIGILL":
        assert "Illegal instruction: this build needs CPU features the host lacks" in text


@pytest.mark.parametrize("returncode", [0, 1, 3, 127, 128, 200])
def test_an_ordinary_exit_is_not_called_a_signal(returncode: int) -> None:
    assert signal_of(returncode) is None and describe_exit(returncode) == f"exit {returncode}"


def test_a_build_step_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    # A real SIGILL: the process raises it on itself, as a CPU does on an instruction it lacks; it prints nothing.
    argv = [sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(signal.SIGILL)})"]
    with pytest.raises(RuntimeError) as err:
        run_logged(argv, tmp_path / "build.log", "checking that vLLM loads its CPU extension")
    assert "failed (killed by SIGILL (exit -4): Illegal instruction: this build needs CPU features" in str(err.value)


@pytest.fixture(scope="module")
def vllm_python() -> str:
    return str(Path(build_image(compose_cell([]).cell.image).location) / "bin" / "python")


def run_check(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd="/")


@pytest.mark.slow
def test_the_build_check_loads_the_extension_vllm_picks_on_this_host(vllm_python: str) -> None:
    result = run_check(check_argv(vllm_python))
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    host = read_cpu_facts()
    assert loaded["extension"] == expected_extension(host), f"{host.model}: {loaded}"
    assert loaded["native_wna16"] is (loaded["extension"] in NATIVE_WNA16_EXTENSIONS)
    assert loaded["version"] == "0.32.0"
    record = build_image(compose_cell([]).cell.image)
    assert (record.cpu_extension, record.native_wna16_op) == (loaded["extension"], loaded["native_wna16"])


@pytest.fixture(scope="module")
def qemu_x86_64() -> str:
    if platform.machine() != "x86_64":
        pytest.skip("the AVX2 emulation runs the host's x86_64 env under qemu-user: an x86_64 host only")
    found = shutil.which("qemu-x86_64")
    if found is None:
        require_component("qemu-x86_64", "apt-get install -y qemu-user")
    return found


@pytest.mark.slow
def test_on_an_emulated_avx2_cpu_the_import_by_name_dies_and_the_build_check_passes(vllm_python: str, qemu_x86_64: str) -> None:
    # Haswell: AVX2, FMA, no AVX-512 (qemu's TCG has no AVX-512 at all), so CPUID tells torch what an AVX2 host does.
    haswell = [qemu_x86_64, "-cpu", "Haswell"]
    old = run_check([*haswell, vllm_python, "-c", IMPORT_BY_NAME])
    assert signal_of(old.returncode) == signal.SIGILL, (old.returncode, old.stderr[-2000:])
    assert "CPU features the host lacks" in describe_exit(old.returncode)
    new = run_check([*haswell, *check_argv(vllm_python)])
    assert new.returncode == 0, (describe_exit(new.returncode), new.stderr[-3000:])
    loaded = json.loads(new.stdout.strip().splitlines()[-1])
    assert loaded["extension"] == expected_extension(AVX2) == "_C_AVX2"
    assert loaded["native_wna16"] is False  # the AVX2 build has no cpu_gemm_wna16: W4A16 takes the fallback


def _extension_needs(vllm_python: str, library: str) -> Path:
    """Where the loader finds `library` for the extension that loads on this host (from ldd)."""
    site = Path(vllm_python).parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    extension = expected_extension(read_cpu_facts()) or "_C"
    (shared_object,) = (site / "vllm").glob(f"{extension}.*so")
    for line in subprocess.run(["ldd", str(shared_object)], capture_output=True, text=True, check=True).stdout.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if name == library:
            return Path(rest.split()[0])
    raise AssertionError(f"{shared_object.name} does not link {library}")


@pytest.mark.slow
def test_an_extension_whose_system_library_cannot_load_fails_the_check(vllm_python: str) -> None:
    # The fault an image base without libnuma has, made for real: in a mount namespace of its own the check's process
    # sees /dev/null where libnuma.so.1 is. vLLM alone only warns (the venv's old probe passed such an env).
    libnuma = _extension_needs(vllm_python, "libnuma.so.1")
    script = 'mount --bind /dev/null "$1" && shift && exec "$@"'
    argv = ["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(libnuma), *check_argv(vllm_python)]
    result = run_check(argv)
    assert result.returncode == 3, (describe_exit(result.returncode), result.stderr[-3000:])
    assert "vLLM's CPU extension did not load" in result.stderr and "libnuma.so.1" in result.stderr
    warned_by_vllm_only = run_check(argv[:-2] + ["-c", "import torch, vllm, vllm._custom_ops"])
    assert warned_by_vllm_only.returncode == 0 and "Failed to import from vllm._C" in warned_by_vllm_only.stderr
