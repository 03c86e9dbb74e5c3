"""One closed window of online (prequential) evaluation and operations figures."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import _codec


@dataclass(slots=True)
class MetricsWindow:
    window_start_ms: int  # event time, inclusive
    window_end_ms: int  # event time, exclusive
    window_kind: str = "tumbling"  # "tumbling" | "hopping"
    events: int = 0  # valid events whose event time falls in the window
    predictions: int = 0
    scored: int = 0  # events scored against the user's previous prediction
    users: int = 0
    late_events: int = 0  # events that arrived after the window had closed (not merged)
    dead_letters: int = 0
    dead_letter_rate: float = 0.0
    #: ranking metrics keyed ``hr@10``, ``ndcg@10``, ``mrr@10``, ``hr@20`` ... (means over scored)
    metrics: dict[str, float] = field(default_factory=dict)
    action_accuracy: float | None = None
    action_macro_f1: float | None = None
    coverage: float | None = None  # distinct predicted items / catalogue size
    #: beyond-accuracy figures of the window's top-K lists, keyed ``novelty@10``, ``arp@10``,
    #: ``aplt@10`` (with the model's training counts), ``ild@10`` (with item categories),
    #: ``gini@10`` (exposure Gini; absent past the window's exposure cap) ... (model_core.beyond)
    beyond: dict[str, float] = field(default_factory=dict)
    #: what each ``beyond`` figure except Gini is a mean over (recommended items for novelty,
    #: lists for ARP / APLT, lists with two categorised items for ILD): exact means over windows
    beyond_n: dict[str, float] = field(default_factory=dict)
    events_per_s: float = 0.0  # processing rate while the window was open (wall clock)
    #: end-to-end latency (event time -> prediction) percentiles, nearest rank, from a
    #: log-bucket histogram: within 1 % of the exact value
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    model_version: str = ""
    emitted_at_ms: int = 0

    def to_json(self) -> bytes:
        return _codec.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> MetricsWindow:
        return _codec.from_json(cls, raw)
