"""What a query of the served model looks like, and its answer (MLflow type-hint signature)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

MAX_HISTORY = 10_000
INT64 = 2**63


class Query(BaseModel):
    """A history of item ids, or a user id whose recent items the feature store holds."""

    history: list[int] | None = Field(default=None, max_length=MAX_HISTORY,
                                      description="Catalog ids of the user's items, oldest first")
    user_id: int | None = Field(default=None, description="A user known to the feature store")
    k: int = Field(default=10, ge=1, le=100, description="How many items to recommend")

    @model_validator(mode="after")
    def history_or_user(self) -> Query:
        if (self.history is None) == (self.user_id is None):
            raise ValueError("give either a history or a user_id")
        return self

    @field_validator("history")
    @classmethod
    def ids_fit_int64(cls, history: list[int] | None) -> list[int] | None:
        if history and any(not -INT64 <= i < INT64 for i in history):
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
