"""A cell's server that cannot bind, never gets healthy, or hangs mid-stream: real vLLM, one cell at a time.

Uses the model, image and bf16 records the shared end-to-end sweep built (`swept`), so no stage is rebuilt.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import psutil
import pytest
from project import cell_processes, when_measuring

import specsweep.cell as cell_module
from specsweep.cell import run_cell
from specsweep.config.grid import expand
from specsweep.records.cell import CellRecord
from specsweep.records.image import ImageRecord
from specsweep.records.model import ModelRecord
from specsweep.records.quant import QuantRecord

pytestmark = pytest.mark.slow

SHORT = ["quant=bf16", "drafter=none", "eval=none", "bench.runs=1",
         "bench.workloads=[{name:probe,prompt_file:data/prompts/free_text.txt,max_tokens:8}]"]  # fmt: skip


def records(swept: Path) -> tuple[ModelRecord, QuantRecord, ImageRecord]:
    def one(pattern: str) -> Path:
        (found,) = sorted((swept / "results").glob(pattern))
        return found

    return (
        ModelRecord.model_validate_json(one("_models/*.json").read_text()),
        QuantRecord.model_validate_json(one("_quants/gemma3_270m-bf16-*.json").read_text()),
        ImageRecord.model_validate_json(one("_images/*.json").read_text()),
    )


def run(swept: Path, out: Path, *overrides: str) -> CellRecord:
    (cell,) = expand([*SHORT, *overrides])
    model, quant, image = records(swept)
    return run_cell(cell, out, model, quant, image, out / "server.log")


@pytest.fixture
def held_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_free_port_taken_before_vllm_binds_it_is_retried(
    swept: Path, tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # The race itself cannot be timed here: the first "free" port handed out is one another process holds.
    handed = iter([held_port])
    real = cell_module.free_port
    monkeypatch.setattr(cell_module, "free_port", lambda host="127.0.0.1": next(handed, None) or real(host))
    record = run(swept, tmp_path)
    assert record.status == "ok", record.error
    assert f"port {held_port} on 127.0.0.1 is already in use" in capsys.readouterr().err
    argv = __import__("json").loads((tmp_path / "manifest.json").read_text())["server_argv"]
    assert argv[argv.index("--port") + 1] != str(held_port)


def test_a_configured_port_in_use_fails_the_cell_with_the_fix(swept: Path, tmp_path: Path, held_port: int) -> None:
    record = run(swept, tmp_path, f"serve.port={held_port}")
    assert record.status == "failed"
    assert f"serve.port {held_port} is in use by another process" in record.error and "serve.port=null" in record.error
    assert cell_processes(tmp_path) == []


def test_a_server_never_healthy_times_out_and_its_group_is_gone(swept: Path, tmp_path: Path) -> None:
    record = run(swept, tmp_path, "serve.startup_timeout_s=3", "serve.shutdown_timeout_s=5")
    assert record.status == "failed"
    # The 3 s startup timeout ended it (the error says which timeout fired; no wall-clock bound on a loaded host).
    assert "not healthy after 3 s (serve.startup_timeout_s)" in record.error
    assert cell_processes(tmp_path) == []


def test_a_hanging_stream_hits_the_request_timeout_and_the_group_is_gone(
    swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Freeze the server while a measured request streams.
    threading.Thread(target=when_measuring, args=(tmp_path, psutil.Process.suspend, 0.1, 600), daemon=True).start()
    # A frozen server never exits by itself: waiting the usual grace for it to do so only adds time here.
    monkeypatch.setattr(cell_module, "SERVER_EXIT_GRACE_S", 2)
    record = run(swept, tmp_path, "bench.request_timeout_s=4", "serve.shutdown_timeout_s=3")
    assert record.status == "failed"
    assert "timeout" in record.error.lower() or "timed out" in record.error.lower(), record.error
    # A frozen server cannot act on SIGTERM: the group's SIGKILL after the grace period took it.
    assert cell_processes(tmp_path) == []


def test_a_corrupt_cached_model_fails_the_cell_before_serving_naming_the_file_and_fix(swept: Path, tmp_path: Path) -> None:
    model, quant, image = records(swept)
    # A hard-linked copy of the cached model with one weights file truncated: the shared cache stays untouched.
    copy = tmp_path / "model"
    shutil.copytree(model.location, copy, copy_function=os.link)
    weights = sorted(copy.glob("*.safetensors"))[0]
    head = weights.read_bytes()[:1000]
    weights.unlink()
    weights.write_bytes(head)
    broken = model.model_copy(update={"location": str(copy)})
    (cell,) = expand(SHORT)
    receipts = (tmp_path / "model.json", tmp_path / "quant.json", tmp_path / "image.json")
    out = tmp_path / "cell"
    record = run_cell(cell, out, broken, quant, image, out / "server.log", receipts=receipts)
    assert record.status == "failed"
    assert f"base model gemma3_270m at {copy} does not match its manifest: {weights.name}" in record.error
    assert f"delete {receipts[0]} and rerun" in record.error
    assert cell_processes(out) == [] and not (out / "server.log").exists()
