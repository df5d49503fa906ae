"""What a query of the served model looks like, and its answer (MLflow type-hint signature)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

MAX_HISTORY = 10_000
INT64 = 2**63


class Query(BaseModel):
    """Next items after a history of item ids, or after the recent items the feature store
    holds for a user; or the items nearest to one item (`similar`)."""

    history: list[int] | None = Field(default=None, max_length=MAX_HISTORY,
                                      description="Catalog ids of the user's items, oldest first")
    user_id: int | None = Field(default=None, description="A user known to the feature store")
    similar: int | None = Field(default=None, description="An item id: its nearest items")
    k: int = Field(default=10, ge=1, le=100, description="How many items to recommend")
    exclude_seen: bool = Field(default=True, description="Leave out the history's items")
    explain: bool = Field(default=False, description="Name the history items behind each one")

    @model_validator(mode="after")
    def one_subject(self) -> Query:
        if sum(x is not None for x in (self.history, self.user_id, self.similar)) != 1:
            raise ValueError("give one of a history, a user_id or a similar item id")
        return self

    @field_validator("history")
    @classmethod
    def ids_fit_int64(cls, history: list[int] | None) -> list[int] | None:
        if history and any(not -INT64 <= i < INT64 for i in history):
            raise ValueError("item ids must be 64-bit integers")
        return history


class Reason(BaseModel):
    item_id: int  # a history item
    weight: float  # its share of what it and the other history items add to the score


class Recommendation(BaseModel):
    item_id: int
    title: str
    score: float
    because: list[Reason] | None = None  # with `explain`: the history items behind it


class Answer(BaseModel):
    recommendations: list[Recommendation]
    source: str  # "model"; "popularity" when no history item is known; "similar"
    unknown_items: list[int]  # history (or similar) ids the model does not know, ignored
    model_version: str | None = None  # the registry version that answered, when following
