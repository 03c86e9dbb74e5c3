"""``seqstream broker``: run the embedded Kafka-protocol broker until Ctrl-C.

``--log-level`` / ``--log-format`` (or ``SEQSTREAM_LOG_LEVEL`` / ``SEQSTREAM_LOG_FORMAT``)
set the level of the broker's own log (Tansu's ``RUST_LOG``), whose lines this command
passes on to stderr through seqstream's logging: timestamped text, or one JSON object per
line for a log shipper. ``SEQSTREAM_BROKER_LOG`` (a ``RUST_LOG`` filter) still wins when set.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from stream_app.commands._common import add_log_options, port_number, settings_from_args

log = logging.getLogger("seqstream.broker")

#: seqstream's log levels -> Tansu's ``RUST_LOG`` levels
RUST_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error",
               "CRITICAL": "error"}


def register(sub) -> None:
    p = sub.add_parser("broker", help="start the embedded broker (Tansu, memory storage, loopback)")
    p.add_argument("--port", type=port_number, default=9092)
    add_log_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.kafka.broker import EmbeddedBroker
    from stream_app.observe.logs import configure_logging

    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("SEQSTREAM_BROKER_LOG", RUST_LEVELS[settings.log_level])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as broker:
        print(f"broker ready at {broker.url}  (SEQSTREAM_BROKER_URL={broker.url}); Ctrl-C stops it",
              flush=True)
        relay = _LogRelay(broker.log_path)
        while not stop.wait(0.5):
            relay.pass_on()
            if not broker.alive():
                relay.pass_on()
                log.error("broker exited unexpectedly:\n%s", broker.log_tail())
                return 1
        relay.pass_on()
    print("broker stopped", flush=True)
    return 0


class _LogRelay:
    """Passes the lines Tansu appends to its log file to seqstream's logging, at the level
    each line names (Tansu writes ``... WARN ...``, ``... ERROR ...``; else INFO)."""

    _LEVELS = (("ERROR", logging.ERROR), ("WARN", logging.WARNING), ("DEBUG", logging.DEBUG),
               ("TRACE", logging.DEBUG))

    def __init__(self, path) -> None:
        self.path = path
        self.offset = 0  # a fresh file per start: its startup lines are passed on too

    def pass_on(self) -> None:
        if not self.path or not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        for raw in data[:end].decode(errors="replace").splitlines():
            line = _strip_ansi(raw).strip()
            if line:
                head = line[:60]
                level = next((lv for word, lv in self._LEVELS if word in head), logging.INFO)
                log.log(level, "tansu: %s", line)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
