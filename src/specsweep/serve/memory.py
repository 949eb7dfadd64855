"""Memory per cell: weight files on disk, what vLLM's log says it loaded and gave the KV cache, and the peak memory
of the server's processes sampled while it serves."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import psutil

from specsweep.records.cell import MemoryRecord

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt")
GIB = 1024**3

# vLLM 0.32's own log lines (model_loader/weight_utils.py, v1/worker/gpu_model_runner.py, v1/worker/cpu_worker.py,
# v1/worker/gpu_worker.py, v1/core/kv_cache_utils.py).
_CHECKPOINT = re.compile(r"Checkpoint size: ([\d.]+) GiB")
_MODEL_MEMORY = re.compile(r"Model loading took ([\d.]+) GiB memory")
_KV_CPU = re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache")
_KV_GPU = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_KV_SIZE = re.compile(r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")


def weights_on_disk(location: str | Path | None) -> int | None:
    """Bytes of weight files under a checkpoint dir (or one weight file); None when there is nothing there."""
    if not location:
        return None
    path = Path(location)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    sizes = [f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)]
    return sum(sizes) if sizes else None


def from_server_log(text: str) -> dict:
    """The memory figures vLLM logged at start (the first occurrence of each; a restart logs them again)."""
    out: dict = {}
    if match := _CHECKPOINT.search(text):
        out["checkpoint_gib"] = float(match.group(1))
    if match := _MODEL_MEMORY.search(text):
        out["model_memory_gib"] = float(match.group(1))
    if match := _KV_CPU.search(text) or _KV_GPU.search(text):
        out["kv_cache_gib"] = float(match.group(1))
    if match := _KV_SIZE.search(text):
        out["kv_cache_tokens"] = int(match.group(1).replace(",", ""))
        out["max_model_len"] = int(match.group(2).replace(",", ""))
        out["kv_cache_max_concurrency"] = float(match.group(3))
    return out


class PeakMemory:
    """Samples the summed RSS of the processes carrying `marker_env=marker_value` (the cell's server and its
    workers) every `interval_s` in a thread, keeping the peak. The marker finds a container's processes too (they
    are host processes), where a process tree from the `docker run` client would not.

    RSS comes from /proc/<pid>/statm (the kernel's counters, read in microseconds). PSS would need smaps_rollup,
    which walks the server's page tables under its mmap lock at every sample: a sampler must not slow what it
    measures, so PSS is read once, at the end of the server's life, not sampled."""

    def __init__(self, marker_env: str, marker_value: str, interval_s: float = 0.5) -> None:
        self.marker_env, self.marker_value, self.interval_s = marker_env, marker_value, interval_s
        self.peak_rss = self.processes = self.final_pss_bytes = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._known: dict[int, psutil.Process] = {}

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _discover(self) -> None:
        for process in psutil.process_iter():
            if process.pid in self._known:
                continue
            try:
                if process.environ().get(self.marker_env) == self.marker_value:
                    self._known[process.pid] = process
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue

    def sample(self) -> None:
        rss = alive = 0
        for pid, process in list(self._known.items()):
            try:
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                del self._known[pid]
                continue
            except (psutil.AccessDenied, psutil.ZombieProcess):
                continue
            alive += 1
        if not alive:
            return
        self.samples += 1
        if self.peak_rss is None or rss > self.peak_rss:
            self.peak_rss, self.processes = rss, alive

    def final_pss(self) -> None:
        """PSS summed over the processes still alive: once, when the workloads and evals are done."""
        total = 0
        for process in list(self._known.values()):
            try:
                total += getattr(process.memory_full_info(), "pss", 0)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.final_pss_bytes = total or None

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            # Workers start after the API server; look for new ones now and then, not at every sample.
            if tick % 10 == 0:
                self._discover()
            self.sample()
            tick += 1
            self._stop.wait(self.interval_s)


def memory_record(server_log: Path, weights: str | None, drafter_weights: str | None, peak: PeakMemory | None) -> MemoryRecord:
    text = server_log.read_text(errors="replace") if server_log.is_file() else ""
    return MemoryRecord(
        weights_disk_bytes=weights_on_disk(weights),
        drafter_weights_disk_bytes=weights_on_disk(drafter_weights),
        **from_server_log(text),
        **({"peak_rss_bytes": peak.peak_rss, "pss_at_end_bytes": peak.final_pss_bytes, "processes": peak.processes,
            "samples": peak.samples} if peak else {}),
    )  # fmt: skip
