"""``seqstream broker``: run the embedded Kafka-protocol broker until Ctrl-C.

``--log-level`` / ``--log-format`` (or ``SEQSTREAM_LOG_LEVEL`` / ``SEQSTREAM_LOG_FORMAT``)
set the level of the broker's own log (Tansu's ``RUST_LOG``), whose lines this command
passes on to stderr through seqstream's logging: timestamped text, or one JSON object per
line for a log shipper. ``SEQSTREAM_BROKER_LOG`` (a ``RUST_LOG`` filter) still wins when set.

Tansu's ``info`` is no start/stop log: it traces every request, field by field (about
40 MB/s with two workers, a learner and a replay of 17 events/s). Mapped from seqstream's
default INFO it filled 19 GB of log in three minutes, and this command, reading it all
back, grew to 24 GB and was killed by the kernel, taking the broker's in-memory topics
with it. So INFO and WARNING map to Tansu's ``warn`` (its start lines — version, listen
address, storage — are printed at every level), DEBUG to its ``info``; and the relay
passes on at most :data:`RELAY_MAX_BYTES` per half second, skipping (and saying so) what
lies beyond, so the command's memory stays bounded whatever the level.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from stream_app.commands._common import add_log_options, port_number, settings_from_args

log = logging.getLogger("seqstream.broker")

#: seqstream's log levels -> Tansu's ``RUST_LOG`` levels (its info traces every request)
RUST_LEVELS = {"DEBUG": "info", "INFO": "warn", "WARNING": "warn", "ERROR": "error",
               "CRITICAL": "error"}
#: the most of Tansu's log passed on per pass (every 0.5 s); the rest is skipped, counted
RELAY_MAX_BYTES = 1 << 20


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

    def __init__(self, path, max_bytes: int = RELAY_MAX_BYTES) -> None:
        self.path = path
        self.offset = 0  # a fresh file per start: its startup lines are passed on too
        self.max_bytes = max_bytes
        self.skipped = 0  # bytes of Tansu's log not passed on (it wrote faster)

    def pass_on(self) -> None:
        if not self.path or not self.path.exists():
            return
        jumped = False
        with open(self.path, "rb") as f:
            size = f.seek(0, 2)
            if size - self.offset > self.max_bytes:  # behind: jump to the newest lines
                skip = size - self.offset - self.max_bytes
                self.offset += skip
                self.skipped += skip
                jumped = True
                log.warning("tansu wrote %.1f MB of log faster than it can be passed on; "
                            "skipped (%.1f MB in all). SEQSTREAM_BROKER_LOG=warn keeps it "
                            "small", skip / 1e6, self.skipped / 1e6)
            f.seek(self.offset)
            data = f.read(self.max_bytes)
        start = data.find(b"\n") + 1 if jumped else 0  # the jump cut a line: the next one
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        data = data[start:end] if end > start else b""
        for raw in data.decode(errors="replace").splitlines():
            line = _strip_ansi(raw).strip()
            if line:
                head = line[:60]
                level = next((lv for word, lv in self._LEVELS if word in head), logging.INFO)
                log.log(level, "tansu: %s", line)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
