"""The adaptive sweep's state between rounds (adaptive.json)."""

from __future__ import annotations

from pydantic import BaseModel

from specsweep.records.base import Record


class GroupSearch(BaseModel):
    measured: dict[int, float] = {}
    predicted: dict[int, float] = {}
    predicted_before_measuring: dict[int, float] = {}
    order: list[int] = []
    best_k: int | None = None


class AdaptiveState(Record):
    """An adaptive sweep's search so far (results/<sweep>/adaptive.json): what each group measured and predicted."""

    sweep: str
    cells: list[str]
    groups: dict[str, GroupSearch] = {}
    # The last round: each recommended batch-size schedule served as a cell (its full overrides), so the report
    # shows predicted vs measured for it too.
    schedule_cells: list[list[str]] = []
    done: bool = False
