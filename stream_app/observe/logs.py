"""Logging for seqstream's long-running commands (worker, broker): one setup for our
loggers and the libraries' (Faust, aiokafka, mode), with timestamps, an optional JSON line
format for log shippers, and a rate limit on repeated lines.

Without a configured handler, Python prints only WARNING and above of any logger, without
time or source, and a library that configures nothing loses its crash reports: this module
gives every record a handler at the level asked for.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
# libraries that log a line per retry or per message at INFO: kept at WARNING unless DEBUG.
# ``stream_app.kafka``: Faust's services log their life cycle ("[^-FaustApp]: Starting...")
# under the module of the subclass, and our Faust subclasses live there (our own lines use
# ``seqstream.*`` names).
_CHATTY = ("aiokafka", "kafka", "faust", "mode", "stream_app.kafka")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


# Faust's own lines that say nothing to a seqstream user: the Monitor sensor is left out on
# purpose (stream_app.worker.app), so Faust finds no sensor state at each rebalance
_NOISE = ("Missing sensor state for rebalance",)


class RateLimit(logging.Filter):
    """Let through at most ``burst`` records of one (logger, message template) per
    ``period_s``; the next one let through says how many were suppressed meanwhile.

    A broker that is down makes the Kafka client log a line per retry (about a hundred a
    second): the reason is in the first lines, and the rest would bury it."""

    def __init__(self, burst: int = 5, period_s: float = 30.0) -> None:
        super().__init__()
        self.burst, self.period_s = burst, period_s
        self._seen: dict[tuple[str, str], list] = {}  # key -> [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        if any(n in str(record.msg) for n in _NOISE):
            return False
        key = (record.name, str(record.msg))
        now = record.created
        slot = self._seen.get(key)
        if slot is None or now - slot[0] >= self.period_s:
            dropped = slot[2] if slot else 0
            self._seen[key] = [now, 1, 0]
            if len(self._seen) > 10_000:  # bounded: forget the oldest keys
                for k in list(self._seen)[:5_000]:
                    del self._seen[k]
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar lines suppressed]"
            return True
        slot[1] += 1
        if slot[1] <= self.burst:
            return True
        slot[2] += 1
        return False


def configure_logging(level: str = "INFO", fmt: str = "text", stream=None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr)."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    if level != "DEBUG":
        for name in _CHATTY:
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
