"""Parse `vllm serve` argument lists with vLLM's own CLI code. Run with the serving env's python (it imports only
vLLM), e.g. `<env>/bin/python vllm_cli_probe.py < argvs.json`: a JSON list of argument lists after `vllm serve`
(the model first) in, a JSON list of {"ok", "error", "args"} out.

The same code path `vllm serve` runs before it starts anything: `make_arg_parser` and
`validate_parsed_serve_args` (unknown flags, bad choices, malformed --speculative-config JSON, flag conflicts).
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


def parse(argv: list[str]) -> dict:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    model, *flags = argv
    try:
        namespace = make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", model, *flags])
        validate_parsed_serve_args(namespace)
    except SystemExit as exit_:  # argparse reports to stderr and exits
        return {"ok": False, "error": f"argparse exit {exit_.code}", "args": None}
    except Exception as err:  # noqa: BLE001 - reported back to the caller
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "args": None}
    return {"ok": True, "error": None, "args": _plain(vars(namespace))}


if __name__ == "__main__":
    json.dump([parse(argv) for argv in json.load(sys.stdin)], sys.stdout)
