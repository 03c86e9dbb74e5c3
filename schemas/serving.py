"""The records of seqstream's serving endpoints (HTTP, JSON): requests, answers, errors.

One class per record; :func:`schemas.json_schema.json_schema` makes each one's JSON Schema
from the same class, and ``/v1/openapi.json`` embeds them. The answers are flat records of
parallel lists, like :class:`~schemas.prediction.Prediction`.

:meth:`RankRequest.from_dict` validates what a caller sent and raises
:class:`~schemas.exceptions.SchemaError` naming the field: the endpoint answers it as a 400
with an :class:`ErrorBody`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas import _codec
from schemas.event import MAX_ID_CHARS
from schemas.exceptions import SchemaError

#: Candidates a rank request may carry unless the worker is configured otherwise.
DEFAULT_MAX_CANDIDATES = 1000


@dataclass(slots=True)
class RankRequest:
    """Re-order a caller's candidates for one user (``POST /v1/rank``)."""

    user_id: str  # whose live sequence personalises the order
    items: list[str]  # the candidates (item ids), in the caller's retrieval order
    #: the caller's own retrieval scores, one per item (higher is better); without them the
    #: caller's order stands in for its scores
    scores: list[float] | None = None
    #: weight of the model's order against the caller's, 0..1 (default 1 without scores,
    #: 0.5 with them)
    alpha: float | None = None
    #: true: the answer says, for its first 3 items the model knows, which past events of
    #: the user's sequence made the model score them (``Ranking.explanations``)
    explain: bool = False

    @classmethod
    def from_dict(cls, d: object, max_items: int = DEFAULT_MAX_CANDIDATES) -> RankRequest:
        """The request ``d`` (a parsed JSON body) holds; :class:`SchemaError` naming the field
        otherwise."""
        if not isinstance(d, dict):
            raise SchemaError("the body must be a JSON object", None)
        unknown = sorted(set(d) - {"user_id", "items", "scores", "alpha", "explain"})
        if unknown:
            raise SchemaError(f"unknown field(s): {', '.join(unknown)}", unknown[0])
        user_id = check_user_id(d.get("user_id"))
        items = d.get("items")
        if not isinstance(items, list):
            raise SchemaError("items: expected a list of item ids", "items")
        if len(items) > max_items:
            raise SchemaError(f"items: {len(items)} candidates, at most {max_items} per "
                              "request", "items")
        for i, it in enumerate(items):
            if not isinstance(it, str) or not 0 < len(it) <= MAX_ID_CHARS:
                raise SchemaError(f"items[{i}]: expected a non-empty string of at most "
                                  f"{MAX_ID_CHARS} characters", "items")
        scores = d.get("scores")
        if scores is not None:
            if not isinstance(scores, list) or len(scores) != len(items):
                raise SchemaError(f"scores: expected a list of {len(items)} numbers (one per "
                                  "item)", "scores")
            for i, s in enumerate(scores):
                if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                    raise SchemaError(f"scores[{i}]: expected a finite number", "scores")
            scores = [float(s) for s in scores]
        alpha = d.get("alpha")
        if alpha is not None:
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                    or not 0.0 <= alpha <= 1.0:
                raise SchemaError("alpha: expected a number from 0 to 1", "alpha")
            alpha = float(alpha)
        explain = d.get("explain", False)
        if not isinstance(explain, bool):
            raise SchemaError("explain: expected true or false", "explain")
        return cls(user_id, list(items), scores, alpha, explain)

    def to_json(self) -> bytes:
        return _codec.to_json(self)


def check_user_id(user_id: object) -> str:
    """``user_id`` if it is a valid user id (as in events); :class:`SchemaError` otherwise."""
    if not isinstance(user_id, str) or not user_id:
        raise SchemaError("user_id: expected a non-empty string", "user_id")
    if len(user_id) > MAX_ID_CHARS:
        raise SchemaError(f"user_id: longer than {MAX_ID_CHARS} characters", "user_id")
    if user_id.startswith("\x00"):
        raise SchemaError("user_id must not start with a NUL character", "user_id")
    return user_id


@dataclass(slots=True)
class Recommendations:
    """What a user should see now (``GET /v1/users/{user_id}/recommendations``)."""

    user_id: str
    items: list[str]  # top-K item ids, best first
    scores: list[float]  # model scores of ``items`` (cold start: popularity counts)
    #: probability of each canonical action for the user's next event (with ``actions=true``
    #: and a model with a next-action head; empty otherwise)
    next_action: dict[str, float]
    model_version: str
    sequence_length: int  # events of the user's live sequence the answer used
    #: true when the user has no live sequence here: the items are the popular ones
    cold_start: bool
    exclude_seen: bool  # items of the user's sequence were left out
    served_by: str = ""  # the worker that answered (its advertised URL)
    #: with ``explain=true``: per item of the first 3, the past events that contributed most
    #: (``{"item", "method", "because": [{"item", "action", "events_ago", "weight"}]}``)
    explanations: list[dict] | None = None


@dataclass(slots=True)
class Ranking:
    """A rank request's candidates, re-ordered (``POST /v1/rank``)."""

    user_id: str
    items: list[str]  # every candidate, best first
    scores: list[float]  # blended scores of ``items`` (0..1, higher is better)
    #: the model's score of each item, null for an item the model does not know (placed by
    #: the caller's score alone)
    model_scores: list[float | None]
    model_version: str
    sequence_length: int  # events of the user's live sequence the answer used
    cold_start: bool  # no live sequence: the model part is the items' popularity
    alpha: float  # the weight of the model's order that was used
    served_by: str = ""  # the worker that answered (its advertised URL)
    #: with ``explain: true``: per item of the first 3 the model knows (in the answer's
    #: order), the past events that contributed most, as in ``Recommendations``; null
    #: otherwise and on a cold start
    explanations: list[dict] | None = None


@dataclass(slots=True)
class ErrorBody:
    """Every 4xx/5xx answer of the serving endpoints."""

    error: str  # one line: what was wrong and what to do
    status: int  # the HTTP status, repeated
    field: str | None = None  # the request field at fault, when one is


#: The serving records, by name (their JSON Schemas go into the OpenAPI document).
SERVING_RECORDS: dict[str, type] = {c.__name__: c for c in (RankRequest, Recommendations,
                                                            Ranking, ErrorBody)}

__all__ = ["DEFAULT_MAX_CANDIDATES", "SERVING_RECORDS", "ErrorBody", "RankRequest", "Ranking",
           "Recommendations", "check_user_id"]
