"""``seqstream schema [RECORD]``: the JSON Schema of the records that cross Kafka.

Made by :func:`schemas.json_schema.json_schema` from the same dataclasses that the worker
validates and publishes (Event, Prediction, MetricsWindow, DeadLetter, Alert). Without a
name: one JSON object, record name -> schema; with ``--out DIR``: one ``<Name>.schema.json``
file each.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    from schemas.json_schema import RECORDS

    p = sub.add_parser("schema", help="print the JSON Schema of Event, Prediction, "
                                      "MetricsWindow, DeadLetter, Alert")
    p.add_argument("record", nargs="?", choices=list(RECORDS), help="one record (default: all)")
    p.add_argument("--out", default=None, metavar="DIR", help="write <Name>.schema.json files")
    p.set_defaults(func=run)


def run(args) -> int:
    from schemas.json_schema import RECORDS, json_schema

    names = [args.record] if args.record else list(RECORDS)
    schemas = {n: json_schema(RECORDS[n]) for n in names}
    if args.out:
        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        for n, s in schemas.items():
            (d / f"{n}.schema.json").write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {len(schemas)} schema file(s) to {d}")
        return 0
    print(json.dumps(schemas[names[0]] if args.record else schemas, indent=2))
    return 0
