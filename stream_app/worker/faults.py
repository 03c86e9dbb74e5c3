"""Faults injected on purpose, for ``seqstream chaos --scenario crash-in-batch``.

``SEQSTREAM_FAULTS`` holds comma-separated ``name=value`` pairs; unset (the normal case) no
fault is ever injected. Known faults:

- ``model_raise_every=N``: the worker's model call raises ``RuntimeError`` on every N-th call
  (a flaky accelerator, an out-of-memory on one large batch).
"""

from __future__ import annotations

import os

from schemas.exceptions import SeqstreamError

KNOWN = ("model_raise_every",)


class InjectedFault(RuntimeError):
    """Raised where SEQSTREAM_FAULTS asked for a failure."""


def parse_faults(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in KNOWN:
            raise SeqstreamError(f"SEQSTREAM_FAULTS: unknown fault {name!r} "
                                 f"(known: {', '.join(KNOWN)})")
        try:
            out[name] = int(value)
        except ValueError:
            raise SeqstreamError(f"SEQSTREAM_FAULTS: {name} needs an integer, got {value!r}"
                                 ) from None
        if out[name] < 1:
            raise SeqstreamError(f"SEQSTREAM_FAULTS: {name} must be at least 1")
    return out


def from_environment() -> dict[str, int]:
    return parse_faults(os.environ.get("SEQSTREAM_FAULTS"))
