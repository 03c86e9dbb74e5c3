"""Which worker answers a user, and the hop to it.

A user's state lives in the partition of the events topic their key hashes to (the
producer's default partitioner: murmur2 of the user id, as :mod:`stream_app.kafka.publisher`
and every Kafka client hash it), and the ``user-state`` table's changelog is co-partitioned
with it. The worker that has that partition assigned holds the state; Faust's partition
assignor shares each member's advertised URL (``canonical_url``) and its changelog
partitions with every member (``app.router.table_metadata``), so any worker can look up
any user's owner. Faust's own ``/router/`` and ``/table/`` views stay off: the layout is
used, not published.

A request for a user owned elsewhere is forwarded once (method, path, query, body, the
caller's ``Authorization``), marked with :data:`ROUTED_HEADER`; a worker never forwards a
request that carries the mark (the layout changed while it travelled: a 503 to retry), so
a request cannot loop. Faust's ``Router.route_req`` is not used: it forwards no body.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiokafka.partitioner import DefaultPartitioner
from yarl import URL

#: Set on a forwarded request: the URL of the worker that forwarded it.
ROUTED_HEADER = "X-Seqstream-Routed-By"

_partitioner = DefaultPartitioner()


def advertised_url(settings) -> str:
    """The URL other workers reach this worker's web server at: ``web_advertised_url``, else
    ``http://web_host:web_port``, with this machine's fully qualified name for a wildcard
    bind."""
    if settings.web_advertised_url:
        return settings.web_advertised_url.rstrip("/")
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):
        # a pod of a StatefulSet: its DNS name under the headless Service
        # (worker-0.seqstream-worker.<namespace>.svc...), which /etc/hosts holds
        host = socket.getfqdn()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}"


def partition_of(user_id: str, n_partitions: int) -> int:
    """The events-topic partition of ``user_id`` (the producer's default partitioner)."""
    return _partitioner(user_id.encode(), list(range(n_partitions)), None)


def _ident(url: str | URL) -> tuple[str, int]:
    u = URL(str(url))
    return (u.host or "").lower(), int(u.port or 80)


class NoOwner(Exception):
    """No worker is known to own the user's partition (a rebalance is under way)."""


class Routing:
    """Owner lookup from the assignor's layout, and the one hop to the owner."""

    def __init__(self, app, table_name: str, n_partitions: int, self_url: str,
                 timeout_s: float) -> None:
        self.app = app
        self.table_name = table_name
        self.n_partitions = n_partitions
        self.self_url = self_url.rstrip("/")
        self._self_ident = _ident(self_url)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.forwarded = 0

    def owner(self, user_id: str) -> str | None:
        """The owner's URL, or None when it is this worker; :class:`NoOwner` when no member
        holds the user's partition."""
        partition = partition_of(user_id, self.n_partitions)
        layout = self.app.router.table_metadata(self.table_name)  # url -> {topic: [parts]}
        for url, topics in layout.items():
            if any(partition in parts for parts in topics.values()):
                return None if _ident(url) == self._self_ident else str(url).rstrip("/")
        raise NoOwner(f"no worker holds partition {partition} of user {user_id[:64]!r} "
                      "(rebalancing); retry")

    async def forward(self, owner: str, method: str, path_qs: str, authorization: str | None,
                      body: bytes | None) -> tuple[int, bytes, str]:
        """(status, body, content type) of the owner's answer."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {ROUTED_HEADER: self.self_url}
        if authorization:
            headers["Authorization"] = authorization
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.forwarded += 1
        async with self._session.request(method, owner + path_qs, data=body,
                                         headers=headers) as resp:
            return resp.status, await resp.read(), resp.content_type

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)


__all__ = ["ROUTED_HEADER", "NoOwner", "Routing", "advertised_url", "partition_of"]
