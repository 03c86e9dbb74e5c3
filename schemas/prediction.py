"""One prediction, published for every valid event (key = user_id)."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import _codec


@dataclass(slots=True)
class Prediction:
    event_id: str  # the event that triggered this prediction
    user_id: str
    items: list[str]  # top-K item ids, best first
    scores: list[float]  # model scores of ``items``
    next_action: dict[str, float]  # probability of each canonical action for the next event
    model_version: str
    event_timestamp_ms: int
    emitted_at_ms: int
    extra: dict = field(default_factory=dict)
    # for a sampled share of predictions (SEQSTREAM_EXPLAIN_SHARE): per explained item, the
    # past events that contributed most ({"item", "method", "because": [{"item", "action",
    # "events_ago", "weight"}], "note"?}); None otherwise
    explanations: list[dict] | None = None

    def to_json(self) -> bytes:
        return _codec.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Prediction:
        return _codec.from_json(cls, raw)
