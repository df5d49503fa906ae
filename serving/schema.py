"""What a query of the served model looks like, and its answer (MLflow type-hint signature)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

MAX_HISTORY = 10_000
INT64 = 2**63


class Query(BaseModel):
    history: list[int] = Field(max_length=MAX_HISTORY,
                               description="Catalog ids of the user's items, oldest first")
    k: int = Field(default=10, ge=1, le=100, description="How many items to recommend")

    @field_validator("history")
    @classmethod
    def ids_fit_int64(cls, history: list[int]) -> list[int]:
        if any(not -INT64 <= i < INT64 for i in history):
            raise ValueError("item ids must be 64-bit integers")
        return history


class Recommendation(BaseModel):
    item_id: int
    title: str
    score: float


class Answer(BaseModel):
    recommendations: list[Recommendation]
    source: str  # "model", or "popularity" when no history item is known to the model
    unknown_items: list[int]  # history ids the model does not know, ignored
