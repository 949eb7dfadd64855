"""A dead server's log: the root error is found under the shutdown noise that follows it."""

from __future__ import annotations

from pathlib import Path

from specsweep.serve.logs import failure_excerpt

LOGS = Path(__file__).parent / "data" / "server_logs"


def test_root_error_of_a_real_engine_crash_skips_the_symptoms_and_exit_noise() -> None:
    error, excerpt = failure_excerpt(LOGS / "wna16_float_crash.log", 50)
    # Not EngineDeadError (the API server's view) and not the nanobind leak report printed at exit.
    assert error == "NotImplementedError: \"cpu_gemm_wna16\" not implemented for 'Float'"
    assert len(excerpt) == 50 and excerpt[-1].endswith("not implemented for 'Float'")
    assert not any("nanobind" in line for line in excerpt)


def test_a_log_without_an_exception_gives_its_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("\n".join(f"line {i}" for i in range(80)) + "\n")
    assert failure_excerpt(log, 50) == (None, [f"line {i}" for i in range(30, 80)])
    assert failure_excerpt(tmp_path / "missing.log") == (None, [])
