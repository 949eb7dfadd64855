"""Secrets never reach results, logs or W&B config; ordinary keys that merely contain "token" stay."""

from __future__ import annotations

import pytest

from specsweep.records.manifest import is_secret_key, redact_env


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "hf_token", "db_password", "AWS_SECRET_ACCESS_KEY"])
def test_secret_names_are_redacted(name: str) -> None:
    assert is_secret_key(name)
    assert redact_env({name: "s3cr3t"}) == {name: "<redacted>"}


@pytest.mark.parametrize("name", ["max_tokens", "num_speculative_tokens", "max_num_batched_tokens", "kv_cache_dtype"])
def test_ordinary_config_keys_are_kept(name: str) -> None:
    assert not is_secret_key(name)
