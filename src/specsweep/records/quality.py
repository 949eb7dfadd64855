"""What the quality stage records: a quant's in-process PPL/KLD against its base."""

from __future__ import annotations

from typing import Literal

from specsweep.records.base import Record


class QualityRecord(Record):
    SCHEMA_VERSION = 1
    model: str
    quant: str
    quant_kind: str
    scheme: str
    status: Literal["ok", "not_measured"]
    reason: str | None = None
    method: str | None = None
    ppl: float | None = None
    ppl_base: float | None = None
    kld: float | None = None
    # 100 * ppl_base / ppl: 100 means no loss; below 100 the quant predicts the held-out text worse.
    ppl_recovery_pct: float | None = None
    top1_agreement: float | None = None
    # The same comparison as the served endpoint's (specsweep.evals.distributions.compare on the top-k kept here).
    kld_topk: float | None = None
    top_k: int | None = None
    n_tokens: int | None = None
    window: int | None = None
    text: str
    text_sha256: str
    windows_sha256: str | None = None
    # The quant's in-process scored windows: what the served quant's prompt logprobs are checked against.
    scored: str | None = None
    wall_s: float | None = None
