"""``seqstream worker``: run the stream (one Faust worker) until SIGINT/SIGTERM.

Before the worker starts, the settings, the web and Prometheus ports, the Kafka security
settings and the broker are checked, so each of those mistakes ends in one line within
seconds (``seqstream worker: error: ...``, exit 2) rather than a traceback after the Kafka
client's retries, or a silent exit 1 when Faust's web server cannot bind its port.
"""

from __future__ import annotations

from stream_app.commands._common import (
    add_log_options,
    add_stream_options,
    check_kafka,
    check_port_free,
    settings_from_args,
)


def register(sub) -> None:
    p = sub.add_parser("worker", help="run a stream worker (consumes events, publishes predictions)")
    add_stream_options(p)
    add_log_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.worker.app import run_worker

    settings = settings_from_args(args)
    check_port_free(settings.web_host, settings.web_port,
                    "SEQSTREAM_WEB_PORT, the worker's web server")
    check_port_free(settings.metrics_host, settings.metrics_port,
                    "SEQSTREAM_METRICS_PORT, the Prometheus endpoint")
    check_kafka(settings)
    run_worker(settings)
    return 0
