"""``seqstream publish-items FILE``: item descriptions onto the ``items`` topic.

Items launched after a text model (``train --text-mode text|fused --items ...``) was trained
reach the running workers (recommendable at once) and the learner (a new item's row starts
from its text vector) as records on the ``items`` topic. This command reads a metadata file
the way ``train --items`` does — CSV/TSV with a header, JSON lines or RecBole ``.item``, the
same ``--item-id-column`` and ``--item-text-columns`` — and sends one record per item, keyed by
its id: ``{SEQSTREAM_ITEMS_ID_FIELD: id, "text": description}``. The description is joined as
training joined it, so the vector the workers compute is the one training would have; leave
``SEQSTREAM_ITEMS_TEXT_FIELDS`` unset (or ``text``) on the workers and the learner. Lines
without an id or a text, and repeated ids, are counted and reported, not sent.
"""

from __future__ import annotations

import orjson

from schemas.exceptions import SeqstreamError
from stream_app.commands._common import add_kafka_options, check_kafka, settings_from_args


def register(sub) -> None:
    p = sub.add_parser("publish-items",
                       help="send item descriptions (a metadata file) to the items topic")
    p.add_argument("file", metavar="FILE", help="item metadata: CSV/TSV, JSONL or RecBole .item")
    p.add_argument("--format", dest="item_format", default="auto",
                   choices=("auto", "csv", "tsv", "jsonl", "recbole"))
    p.add_argument("--item-id-column", default="item_id")
    p.add_argument("--item-text-columns", default=None,
                   help="columns joined into the description, comma-separated (default: all "
                        "but the id; use the same as train --item-text-columns)")
    add_kafka_options(p)
    p.set_defaults(func=run)


def item_records(meta, id_field: str) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of each item of a read metadata file."""
    return [(i.encode(), orjson.dumps({id_field: i, "text": t}))
            for i, t in zip(meta.ids, meta.texts, strict=True)]


def run(args) -> int:
    from model_core.terminal import wrapped
    from model_core.text.exceptions import ItemMetadataError
    from model_core.text.items import read_item_metadata
    from stream_app.kafka.replay import make_producer
    from stream_app.kafka.topics import ensure_topics

    try:
        meta = read_item_metadata(args.file, args.item_id_column, args.item_text_columns,
                                  args.item_format)
    except ItemMetadataError as e:
        raise SeqstreamError(str(e)) from None
    if not meta.ids:
        raise SeqstreamError(f"{args.file}: no item with an id and a text ({meta.report()})")
    settings = settings_from_args(args)
    check_kafka(settings)
    ensure_topics(settings, ("items",))
    topic = settings.topic("items")
    producer = make_producer(settings)
    try:
        for key, value in item_records(meta, settings.items_id_field):
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()
    print(f"sent {len(meta.ids):,} item record(s) to {topic}")
    if meta.n_bad:
        print(wrapped(meta.report()))
    return 0
