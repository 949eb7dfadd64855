"""The k-advisor's record (advice.json): predictions per group, the recommended speculative configs, and how the
served schedules measured against their predictions."""

from __future__ import annotations

from pydantic import BaseModel

from specsweep.records.base import Record


class KPrediction(BaseModel):
    k: int
    predicted_tg_req_tps: float
    # Tokens per verify step, the steps that drafted nothing included.
    predicted_tokens_per_step: float
    measured_tg_req_tps: float | None = None
    error_pct: float | None = None


class CostPoint(BaseModel):
    """A measured cell of the step-cost fit, per decoded token (specsweep.advise.cost.StepMix)."""

    k: int
    plain_steps_per_token: float
    drafted_steps_per_token: float
    measured_ms_per_token: float
    fitted_ms_per_token: float


class GroupAdvice(BaseModel):
    model: str
    quant: str
    drafter: str
    drafter_kind: str
    workload: str
    concurrency: int
    k_max: int
    marginal: list[float]
    conditional: list[float]
    # T(d) = plain + fixed + per_token * d for a step that drafted d >= 1 tokens, plain for one that drafted none.
    plain_step_ms: float
    cost_per_token_ms: float
    draft_step_fixed_ms: float
    # False: the fixed cost per drafted step was taken as 0 (fewer than three drafted k measured).
    draft_step_fixed_fitted: bool
    cost_fit_rms_error_pct: float
    cost_points: list[CostPoint]
    predictions: list[KPrediction]
    best_k: int
    best_predicted_tg_req_tps: float
    # "trace replay" (the k_max cell's per-request traces walked at each k) or "marginal" (1 + sum of m_i).
    acceptance_model: str = "marginal"
    # Why predictions cover only measured k (a parallel drafter), if so.
    note: str | None = None
    # The k_max cell: its --speculative-config is the base of the recommendation.
    k_max_cell: str
    # From the k_max cell's per-request traces (--per-request-spec-decode-metrics detailed), when it has them:
    # verify steps seen (drafted ones), the share of all verify steps that drafted nothing, P(accepted = j), HF's
    # heuristic replayed and the oracle bound, per-request t/s.
    trace_steps: int = 0
    plain_step_share: float | None = None
    accepted_length_distribution: list[float] = []
    hf_heuristic_tg_req_tps: float | None = None
    hf_heuristic_mean_k: float | None = None
    oracle_tg_req_tps: float | None = None


class Recommendation(BaseModel):
    model: str
    quant: str
    drafter: str
    workload: str
    best_k_by_concurrency: dict[int, int]
    speculative_config: dict
    # The cell whose --speculative-config it starts from (serving the recommendation changes only its k).
    k_max_cell: str


class ScheduleCheck(BaseModel):
    """A cell that served a batch-size schedule, per workload and concurrency: the k in effect there and the
    fixed-k prediction for that k (from the same group's k_max cell) against the measurement."""

    cell_id: str
    model: str
    quant: str
    drafter: str
    workload: str
    concurrency: int
    schedule: list[list[int]]
    k: int
    predicted_tg_req_tps: float | None
    measured_tg_req_tps: float
    error_pct: float | None


class Advice(Record):
    """The k-advisor's answer for a sweep (advice.json): per group, its fit and predictions; the recommendations."""

    sweep: str
    groups: list[GroupAdvice]
    recommendations: list[Recommendation]
    schedule_checks: list[ScheduleCheck] = []
