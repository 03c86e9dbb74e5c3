"""Who may ask: a bearer token from settings, compared in constant time.

With ``SEQSTREAM_SERVE_TOKEN`` set, every serving request must carry
``Authorization: Bearer <token>``; a missing or wrong one gets a 401. Without a token the
endpoints answer only while the web server is bound to a loopback address (127.0.0.1, ::1,
localhost): a worker opened to the network (``SEQSTREAM_WEB_HOST=0.0.0.0`` for its probes)
answers 403 to every serving request until a token is configured, so users' states are never
exposed without one. The health endpoints need no token (probes carry none).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True)
class Denied:
    status: int  # 401 or 403
    reason: str


class BearerAuth:
    """``check(authorization_header)``: None when the request may proceed, else a
    :class:`Denied` with the status and one line saying why."""

    def __init__(self, token: str | None, web_host: str) -> None:
        self._token = token.encode() if token else None
        self.open_without_token = self._token is None and is_loopback(web_host)
        self.web_host = web_host

    @classmethod
    def from_settings(cls, settings) -> BearerAuth:
        token = settings.serve_token.get_secret_value() if settings.serve_token else None
        return cls(token, settings.web_host)

    def describe(self) -> str:
        """One line for the worker's start log."""
        if self._token is not None:
            return "serving endpoints require the bearer token (SEQSTREAM_SERVE_TOKEN)"
        if self.open_without_token:
            return (f"serving endpoints without authentication on loopback {self.web_host} "
                    "only (set SEQSTREAM_SERVE_TOKEN before opening SEQSTREAM_WEB_HOST)")
        return (f"serving endpoints refuse every request: web host {self.web_host} is not "
                "loopback and SEQSTREAM_SERVE_TOKEN is unset")

    def check(self, authorization: str | None) -> Denied | None:
        if self._token is None:
            if self.open_without_token:
                return None
            return Denied(403, f"serving is disabled: the web server listens on {self.web_host}"
                               " and no SEQSTREAM_SERVE_TOKEN is configured")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return Denied(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return Denied(401, "wrong bearer token")
        return None


__all__ = ["BearerAuth", "Denied", "is_loopback"]
