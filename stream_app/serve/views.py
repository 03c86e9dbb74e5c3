"""The serving endpoints on the worker's (Faust's aiohttp) web server.

    GET  /v1/users/{user_id}/recommendations?k=20&exclude_seen=false&actions=false
    POST /v1/rank            {"user_id": ..., "items": [...], "scores": [...]?, "alpha": ...?}
    GET  /v1/openapi.json    the OpenAPI document (no token needed: no user data)
    (GET /v1/health, /v1/live and /v1/ready: stream_app.observe.health)

Each request: authentication (:mod:`stream_app.serve.auth`), validation (a 400 naming the
field), readiness (a 503 with the reasons while the worker joins, recovers or rebalances),
then the user's owner (:mod:`stream_app.serve.routing`): this worker answers from its live
state (:class:`~stream_app.serve.service.ServingService`), or forwards once to the owner.
Every error is a JSON :class:`~schemas.serving.ErrorBody`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson

from schemas.exceptions import SchemaError
from schemas.serving import ErrorBody, RankRequest, check_user_id
from stream_app.serve.auth import BearerAuth
from stream_app.serve.openapi import openapi_document
from stream_app.serve.routing import ROUTED_HEADER, NoOwner, Routing, advertised_url
from stream_app.serve.service import ServingService

log = logging.getLogger("seqstream.serve")

_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_REC_PARAMS = {"k", "exclude_seen", "actions", "explain"}


class RequestError(Exception):
    """A request answered with ``status`` and an :class:`ErrorBody` (``field`` at fault)."""

    def __init__(self, status: int, error: str, field: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field
        self.retry_after_s = retry_after_s


def _flag(query, name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    try:
        return _TRUE[raw.strip().lower()]
    except KeyError:
        raise RequestError(400, f"{name}: expected true or false, not {raw[:40]!r}",
                           name) from None


def parse_recommendation_query(query, max_k: int, default_k: int) -> tuple[int, bool, bool]:
    """(k, exclude_seen, actions, explain) from the query string; :class:`RequestError` if bad."""
    unknown = sorted(set(query) - _REC_PARAMS)
    if unknown:
        raise RequestError(400, f"unknown query parameter(s): {', '.join(unknown)} (known: "
                                "k, exclude_seen, actions, explain)", unknown[0])
    raw_k = query.get("k")
    k = min(default_k, max_k)
    if raw_k is not None:
        try:
            k = int(raw_k)
        except ValueError:
            raise RequestError(400, f"k: expected an integer, not {raw_k[:40]!r}", "k") from None
        if not 1 <= k <= max_k:
            raise RequestError(400, f"k: expected 1..{max_k}, not {k}", "k")
    return k, _flag(query, "exclude_seen"), _flag(query, "actions"), _flag(query, "explain")


@dataclass
class Serving:
    """What the views share: the service, the routing, the authentication, the limits."""

    service: ServingService
    routing: Routing
    auth: BearerAuth
    health: object  # stream_app.observe.health.Health
    settings: object

    async def read_body(self, request) -> bytes:
        limit = self.settings.serve_max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestError(413, f"request body of {request.content_length} bytes, at most "
                                    f"{limit} (SEQSTREAM_SERVE_MAX_REQUEST_BYTES)")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise RequestError(413, f"request body over {limit} bytes "
                                    "(SEQSTREAM_SERVE_MAX_REQUEST_BYTES)")
        return body

    def admit(self, request) -> None:
        denied = self.auth.check(request.headers.get("Authorization"))
        if denied is not None:
            raise RequestError(denied.status, denied.reason)

    def ready(self) -> None:
        reasons = self.health.reasons()
        if reasons:
            raise RequestError(503, "not ready: " + "; ".join(reasons), retry_after_s=1)

    async def answer(self, request, user_id: str, local, body: bytes | None):
        """Route to the owner, or ``await local()`` when this worker owns the user."""
        try:
            owner = self.routing.owner(user_id)
        except NoOwner as e:
            raise RequestError(503, str(e), retry_after_s=1) from None
        timeout = self.settings.serve_timeout_s
        if owner is None:
            try:
                return 200, await asyncio.wait_for(local(), timeout)
            except asyncio.TimeoutError:
                raise RequestError(503, f"not answered within {timeout:g} s "
                                        "(SEQSTREAM_SERVE_TIMEOUT_S)", retry_after_s=1) from None
        if request.headers.get(ROUTED_HEADER):
            raise RequestError(503, f"user {user_id[:64]!r} is owned by {owner}, not by this "
                                    "worker (the partitions moved); retry", retry_after_s=1)
        try:
            status, content, _ctype = await self.routing.forward(
                owner, request.method, request.rel_url.raw_path_qs,  # %2F stays encoded
                request.headers.get("Authorization"), body)
        except (OSError, asyncio.TimeoutError) as e:  # aiohttp.ClientError is an OSError
            raise RequestError(503, f"the owner of user {user_id[:64]!r} ({owner}) did not "
                                    f"answer: {e!r}", retry_after_s=1) from None
        return status, content


def _json_response(web, status: int, payload) -> object:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return web.bytes(body, content_type="application/json", status=status)


def server_timing(timing: dict, started: float) -> str:
    """The ``Server-Timing`` header of an answer from this worker: ms the request waited for
    its batch and the model thread (``queue``; ``thread``: the part of it after its batch was
    handed to the model thread), its batch's model call (``model``), and the handler from its
    start to the answer (``app``); what a caller measures beyond ``app`` is HTTP and the
    event loop's delay before the handler ran."""
    parts = [f"{name};dur={timing[name]:.2f}" for name in ("queue", "thread", "model")
             if name in timing]
    parts.append(f"app;dur={(time.perf_counter() - started) * 1000.0:.2f}")
    return ", ".join(parts)


def _timed_response(web, status: int, payload, timing: dict, started: float):
    resp = _json_response(web, status, payload)
    if timing:  # answered here (a forwarded request carries no timing of the owner's)
        resp.headers["Server-Timing"] = server_timing(timing, started)
    return resp


def _error_response(web, e: RequestError):
    resp = _json_response(web, e.status, ErrorBody(e.error, e.status, e.field))
    if e.retry_after_s is not None:
        resp.headers["Retry-After"] = str(e.retry_after_s)
    return resp


def install(sapp) -> Serving:
    """Register the serving endpoints on ``sapp``'s Faust app and feed the cold-start counts
    from its agent's batches; the :class:`Serving` they share."""
    from faust import web as fweb

    app, agent, settings = sapp.app, sapp.agent, sapp.settings
    me = advertised_url(settings)
    service = ServingService(agent, settings, served_by=me)
    agent.batch_listeners.append(service.observe_batch)
    serving = Serving(service, Routing(app, agent.table.name, settings.partitions, me,
                                       settings.serve_timeout_s),
                      BearerAuth.from_settings(settings), agent.health, settings)
    openapi = orjson.dumps(openapi_document(settings))

    async def guarded(web, handler):
        try:
            return await handler()
        except RequestError as e:
            return _error_response(web, e)
        except Exception as e:  # noqa: BLE001 - a JSON 500, the traceback in the log
            log.error("serving request failed: %r", e, exc_info=True)
            return _error_response(web, RequestError(500, f"internal error: {e!r}"))

    class Recommendations(fweb.View):
        async def get(self, request, user_id: str):
            async def handle():
                started, timing = time.perf_counter(), {}
                serving.admit(request)
                uid = _user_id(user_id)
                k, exclude_seen, actions, why = parse_recommendation_query(
                    request.query, settings.serve_max_k, settings.top_k)
                serving.ready()
                status, out = await serving.answer(
                    request, uid,
                    lambda: service.recommend(uid, k, exclude_seen, actions, why, timing), None)
                return _timed_response(self.web, status, out, timing, started)
            return await guarded(self.web, handle)

    class Rank(fweb.View):
        async def post(self, request):
            async def handle():
                started, timing = time.perf_counter(), {}
                serving.admit(request)
                body = await serving.read_body(request)
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as e:
                    raise RequestError(400, f"the body is not valid JSON: {e}") from None
                try:
                    req = RankRequest.from_dict(doc, settings.serve_max_candidates)
                except SchemaError as e:
                    raise RequestError(400, e.reason, e.field) from None
                serving.ready()
                status, out = await serving.answer(request, req.user_id,
                                                   lambda: service.rank(req, timing), body)
                return _timed_response(self.web, status, out, timing, started)
            return await guarded(self.web, handle)

    class OpenAPI(fweb.View):
        async def get(self, request):
            return _json_response(self.web, 200, openapi)

    app.page("/v1/users/{user_id}/recommendations", name="seqstream-recommendations")(
        Recommendations)
    app.page("/v1/rank", name="seqstream-rank")(Rank)
    app.page("/v1/openapi.json", name="seqstream-openapi")(OpenAPI)
    return serving


def _user_id(raw: str) -> str:
    try:
        return check_user_id(raw)
    except SchemaError as e:
        raise RequestError(400, e.reason, e.field) from None


__all__ = ["RequestError", "Serving", "install", "parse_recommendation_query"]
