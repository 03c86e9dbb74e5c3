"""A small client for the serving endpoints: :class:`Client` (blocking) and
:class:`AsyncClient` (asyncio) share one implementation.

Each call is written once, as a generator that yields the HTTP request it needs and receives
the answer (:func:`_recommendations`, :func:`_rank`): request building, validation of the
answer and errors live there. The two clients differ only in the transport that runs the
generator (``http.client`` with a kept-alive connection; ``aiohttp``), so they cannot drift
apart::

    with Client("http://127.0.0.1:6066", token="...") as c:
        recs = c.recommendations("u42", k=10, exclude_seen=True)
        ranked = c.rank("u42", ["i7", "i3", "i19"], scores=[12.1, 9.8, 7.5])

    async with AsyncClient("http://127.0.0.1:6066") as c:
        recs = await c.recommendations("u42")

Any worker answers any user. An error answer raises :class:`ServingError` with the status
and the server's one-line reason.
"""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.exceptions import SeqstreamError
from schemas.serving import Ranking, Recommendations


class ServingError(SeqstreamError):
    """An error answer: ``status`` and the server's ``error`` line (``field`` at fault)."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {error}")
        self.status, self.error, self.field = status, error, field


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # with the query string
    body: bytes | None = None


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes


_Call = Generator[_Request, _Answer, Any]


def _decode(answer: _Answer, cls: type):
    try:
        doc = orjson.loads(answer.body) if answer.body else None
    except orjson.JSONDecodeError:
        doc = None
    if answer.status != 200:
        if isinstance(doc, dict) and "error" in doc:
            raise ServingError(answer.status, str(doc["error"]), doc.get("field"))
        raise ServingError(answer.status, answer.body[:200].decode(errors="replace"))
    if not isinstance(doc, dict):
        raise ServingError(answer.status, "the answer is not a JSON object")
    try:
        return cls(**doc)
    except TypeError as e:
        raise ServingError(answer.status, f"unexpected answer: {e}") from None


def _recommendations(user_id: str, k: int | None, exclude_seen: bool,
                     actions: bool, explain: bool = False) -> _Call:
    query = {"exclude_seen": str(exclude_seen).lower(), "actions": str(actions).lower()}
    if explain:
        query["explain"] = "true"
    if k is not None:
        query["k"] = str(k)
    path = (f"/v1/users/{urllib.parse.quote(user_id, safe='')}/recommendations?"
            + urllib.parse.urlencode(query))
    return _decode((yield _Request("GET", path)), Recommendations)


def _rank(user_id: str, items: Sequence[str], scores: Sequence[float] | None,
          alpha: float | None, explain: bool = False) -> _Call:
    doc: dict[str, Any] = {"user_id": user_id, "items": list(items)}
    if explain:
        doc["explain"] = True
    if scores is not None:
        doc["scores"] = [float(s) for s in scores]
    if alpha is not None:
        doc["alpha"] = float(alpha)
    return _decode((yield _Request("POST", "/v1/rank", orjson.dumps(doc))), Ranking)


def _headers(token: str | None, body: bytes | None) -> dict[str, str]:
    h = {"Accept": "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if body is not None:
        h["Content-Type"] = "application/json"
    return h


class Client:
    """Blocking client over one kept-alive HTTP connection (not thread-safe: one per
    thread)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url must be http(s)://host:port, not {base_url!r}")
        conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        self._conn = conn_cls(u.hostname, u.port, timeout=timeout_s)
        self._prefix = u.path.rstrip("/")
        self.token = token

    def _run(self, call: _Call):
        req = next(call)
        try:
            self._conn.request(req.method, self._prefix + req.path, body=req.body,
                               headers=_headers(self.token, req.body))
            resp = self._conn.getresponse()
            answer = _Answer(resp.status, resp.read())
        except (http.client.HTTPException, OSError):
            self._conn.close()  # a broken kept-alive connection: the next call reconnects
            raise
        try:
            call.send(answer)
        except StopIteration as done:
            return done.value
        raise RuntimeError("a client call asked for a second request")

    def recommendations(self, user_id: str, k: int | None = None, exclude_seen: bool = False,
                        actions: bool = False, explain: bool = False) -> Recommendations:
        return self._run(_recommendations(user_id, k, exclude_seen, actions, explain))

    def rank(self, user_id: str, items: Sequence[str], scores: Sequence[float] | None = None,
             alpha: float | None = None, explain: bool = False) -> Ranking:
        return self._run(_rank(user_id, items, scores, alpha, explain))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """asyncio client over one ``aiohttp`` session (connections pooled)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._session = None

    async def _run(self, call: _Call):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        req = next(call)
        async with self._session.request(req.method, self.base_url + req.path, data=req.body,
                                         headers=_headers(self.token, req.body)) as resp:
            answer = _Answer(resp.status, await resp.read())
        try:
            call.send(answer)
        except StopIteration as done:
            return done.value
        raise RuntimeError("a client call asked for a second request")

    async def recommendations(self, user_id: str, k: int | None = None,
                              exclude_seen: bool = False, actions: bool = False,
                              explain: bool = False) -> Recommendations:
        return await self._run(_recommendations(user_id, k, exclude_seen, actions, explain))

    async def rank(self, user_id: str, items: Sequence[str],
                   scores: Sequence[float] | None = None,
                   alpha: float | None = None, explain: bool = False) -> Ranking:
        return await self._run(_rank(user_id, items, scores, alpha, explain))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


__all__ = ["AsyncClient", "Client", "ServingError"]
