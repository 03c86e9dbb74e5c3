"""One alert: a detected change in an online metric, or a threshold crossed."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import _codec


@dataclass(slots=True)
class Alert:
    metric: str  # e.g. "hit@10", "latency_ms", "latency_p99_ms", "dead_letter_rate"
    kind: str  # "drift" (a detector saw the level change) | "threshold" (a limit was crossed)
    detector: str  # "adwin" | "page_hinkley" | "threshold"
    old_level: float | None  # level before the change (threshold alerts: the limit)
    new_level: float  # level after the change (threshold alerts: the observed value)
    window_start_ms: int  # event time: start of the evidence (the new level's data)
    window_end_ms: int  # event time: when the change was detected (exclusive end)
    message: str  # plain language, for people
    severity: str = "warning"  # "warning" | "critical"
    direction: str = ""  # "up" | "down"
    n_observations: int = 0  # observations behind the new level
    model_version: str = ""
    emitted_at_ms: int = 0  # wall clock

    def to_json(self) -> bytes:
        return _codec.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Alert:
        return _codec.from_json(cls, raw)
