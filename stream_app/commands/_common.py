"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse

from stream_app.settings import Settings, load_settings


def add_kafka_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka (defaults from SEQSTREAM_* environment variables)")
    g.add_argument("--broker-url", help="kafka://host:port")
    g.add_argument("--topic-prefix")
    g.add_argument("--app-id")
    g.add_argument("--partitions", type=int)


def add_stream_options(p: argparse.ArgumentParser) -> None:
    add_kafka_options(p)
    g = p.add_argument_group("stream")
    g.add_argument("--model", dest="model_path", help="checkpoint directory")
    g.add_argument("--device", help="auto | cpu | cuda")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--batch-wait-ms", type=int)
    g.add_argument("--top-k", type=int)
    g.add_argument("--window-s", type=int)
    g.add_argument("--max-seq-len", type=int)
    g.add_argument("--data-dir")
    g.add_argument("--store", help="memory:// or rocksdb://")


_SETTING_ARGS = ("broker_url", "topic_prefix", "app_id", "partitions", "model_path", "device",
                 "batch_size", "batch_wait_ms", "top_k", "window_s", "max_seq_len", "data_dir",
                 "store")


def settings_from_args(args: argparse.Namespace, **extra) -> Settings:
    """Environment first, then any CLI option given, then ``extra``."""
    values = {k: getattr(args, k, None) for k in _SETTING_ARGS}
    values.update(extra)
    return load_settings(**values)
