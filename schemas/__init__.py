"""Records that cross Kafka: events, predictions, metrics windows, dead letters, alerts.

This package imports nothing else from the project.
"""

from schemas.actions import ACTIONS, N_ACTIONS, action_index, normalize_action
from schemas.alert import Alert
from schemas.dead_letter import DeadLetter
from schemas.event import Event, parse_event
from schemas.exceptions import SchemaError, SeqstreamError
from schemas.metrics import MetricsWindow
from schemas.prediction import Prediction

__all__ = [
    "ACTIONS",
    "Alert",
    "N_ACTIONS",
    "DeadLetter",
    "Event",
    "MetricsWindow",
    "Prediction",
    "SchemaError",
    "SeqstreamError",
    "action_index",
    "normalize_action",
    "parse_event",
]
