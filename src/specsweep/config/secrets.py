"""Secrets never enter config: recognise them in overrides and YAML, and keep their values out of messages.

Config only names environment variables (`serve.forward_env`); their values are read at launch and handed to
the server by name. Anything that looks like a value of a secret is refused at compose time, before Hydra or
pydantic could echo it in an error, a job log or config.yaml.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# A key is secret when its last word names a credential (HF_TOKEN, WANDB_API_KEY, db_password), or any word is
# unambiguous (AWS_SECRET_ACCESS_KEY). `eos_token_ids`, `max_tokens`, `num_speculative_tokens` are not secrets.
_SECRET_LAST_WORDS = {"token", "key", "apikey", "secret", "password", "passwd", "credential", "credentials", "auth"}
_SECRET_ANY_WORDS = {"secret", "password", "passwd", "apikey", "credential", "credentials"}

# Shapes of real credentials. Bare 40-hex strings (W&B keys) are not here: they are also git revisions, which
# config legitimately pins; a W&B key is caught by its variable name instead.
_TOKEN_SHAPES = re.compile(
    r"""(?x)
      \bhf_[A-Za-z0-9]{20,}                        # Hugging Face
    | \bsk-[A-Za-z0-9_-]{20,}                      # OpenAI and compatible servers
    | \bgh[pousr]_[A-Za-z0-9]{20,}                 # GitHub
    | \bgithub_pat_[A-Za-z0-9_]{20,}
    | \bAKIA[0-9A-Z]{16}\b                         # AWS access key id
    | \bxox[abprs]-[A-Za-z0-9-]{10,}               # Slack
    | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.  # JWT
    | \bBearer\s+[A-Za-z0-9._~+/-]{8,}
    """
)

FIX = "export it in the environment and list its name in serve.forward_env (e.g. serve.forward_env=[HF_TOKEN])"


def is_secret_key(name: str) -> bool:
    words = [word for word in re.split(r"[^a-z0-9]+", str(name).lower()) if word]
    return bool(words) and (words[-1] in _SECRET_LAST_WORDS or any(word in _SECRET_ANY_WORDS for word in words))


def looks_like_secret(value: object) -> bool:
    return isinstance(value, str) and _TOKEN_SHAPES.search(value) is not None


def scrub(text: str) -> str:
    """Token-shaped substrings of a message replaced, for text that may quote user input."""
    return _TOKEN_SHAPES.sub(REDACTED, text)


def _override_parts(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _override_problem(override: str) -> str | None:
    """Why an override would put a secret into config (described without its value), or None."""
    key, value = _override_parts(override)
    if "=" not in override or not value:
        return None
    if is_secret_key(key.rsplit(".", 1)[-1]):
        return f"`{key}=...` puts a value under a secret-looking key"
    if any(_is_secret_flag(flag) for flag in re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", value)):
        return f"`{key}=...` passes a secret flag (e.g. --api-key) on the server's command line"
    if any(is_secret_key(name) for name in re.findall(r"oc\.env:\s*([A-Za-z_]\w*)", value)):
        return f"`{key}=...` copies a secret variable into config through ${{oc.env:...}}"
    if looks_like_secret(value):
        return f"`{key}=...` has a value shaped like an access token"
    return None


def redact_overrides(overrides: list[str]) -> list[str]:
    """Overrides as they may be shown: the value of one that carries a secret is hidden."""
    return [
        override.split("=", 1)[0] + "=" + REDACTED if _override_problem(override) else scrub(override)
        for override in overrides
    ]


def secret_override_problems(overrides: list[str]) -> list[str]:
    """Overrides that would put a secret value into config, each described without its value."""
    return [problem for override in overrides if (problem := _override_problem(override))]


def secret_tree_problems(node: object, path: str = "") -> list[str]:
    """Keys and values of a composed config that hold (or look like) secrets, by their dotted path."""
    problems = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if is_secret_key(key) and value not in (None, "", [], {}):
                problems.append(f"{where}: a value under a secret-looking key")
            else:
                problems += secret_tree_problems(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if _is_secret_flag(value):
                # `--api-key VALUE` in argv is readable by anyone through `ps`; vLLM reads VLLM_API_KEY instead.
                problems.append(f"{path}[{index}]: {value.split('=', 1)[0]} passes a secret on the command line")
            else:
                problems += secret_tree_problems(value, f"{path}[{index}]")
    elif looks_like_secret(node):
        problems.append(f"{path}: a value shaped like an access token")
    return problems


def _is_secret_flag(value: object) -> bool:
    return isinstance(value, str) and value.startswith("-") and is_secret_key(value.lstrip("-").split("=", 1)[0])


def refusal(problems: list[str]) -> str:
    return "secrets never go into config:\n" + "\n".join(f"  {p}" for p in problems) + f"\n  fix: {FIX}"


def unset_forwarded(names: list[str], environ: dict[str, str]) -> list[str]:
    return [name for name in names if not environ.get(name)]


def require_forwarded(names: list[str], environ: dict[str, str]) -> None:
    if missing := unset_forwarded(names, environ):
        raise ValueError(
            f"serve.forward_env lists {', '.join(missing)}, not set in this environment: export "
            f"{' '.join(m + '=...' for m in missing)} before the run, or drop {'it' if len(missing) == 1 else 'them'} "
            "from serve.forward_env"
        )


def server_environment(environ: dict[str, str], forward: list[str], settings: dict[str, str]) -> dict[str, str]:
    """The server's environment: the caller's minus secrets it was not given, plus config settings."""
    kept = {key: value for key, value in environ.items() if key in forward or not is_secret_key(key)}
    return {**kept, **settings}
