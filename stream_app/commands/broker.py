"""``seqstream broker``: run the embedded Kafka-protocol broker until Ctrl-C."""

from __future__ import annotations

import signal
import threading


def register(sub) -> None:
    p = sub.add_parser("broker", help="start the embedded broker (Tansu, memory storage, loopback)")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.broker import EmbeddedBroker

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as broker:
        print(f"broker ready at {broker.url}  (SEQSTREAM_BROKER_URL={broker.url}); Ctrl-C stops it",
              flush=True)
        while not stop.wait(0.5):
            if not broker.alive():
                print("broker exited unexpectedly:\n" + broker.log_tail())
                return 1
    print("broker stopped", flush=True)
    return 0
