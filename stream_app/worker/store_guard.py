"""The persistent (``rocksdb://``) table store after a crash: rebuilt from the changelog.

Faust's RocksDB store writes each table update locally at once and sends it to the changelog
a moment later; on restart it re-reads the changelog only from the last *acknowledged*
offset. After a SIGKILL the local store can therefore hold some keys newer than the changelog
and others reverted to the changelog's older value — a mix that is no prefix of the stream,
which breaks the crash-safety argument of :mod:`stream_app.windows.persistence` (events go
missing from the metrics windows after a few kills).

So a worker with ``rocksdb://`` leaves a marker file when it stops cleanly and removes it when
it starts; a start without the marker (the last run crashed) deletes the local tables first,
and Faust rebuilds them from the changelog like the memory store does. A clean restart (a
deploy, a rollout) keeps the local store and skips the changelog replay, which is what the
persistent store is for.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CLEAN_MARK = "seqstream-clean-shutdown"


def prepare_local_store(app, settings) -> Path | None:
    """Before the worker starts: drop local tables left by a crash; returns the marker path."""
    if not settings.store.startswith("rocksdb"):
        return None
    tabledir = Path(app.conf.tabledir)
    marker = tabledir.parent / CLEAN_MARK
    if tabledir.is_dir() and any(tabledir.iterdir()) and not marker.exists():
        shutil.rmtree(tabledir)
        print("seqstream: the last run did not stop cleanly; local tables are rebuilt from "
              "the changelog", flush=True)
    marker.unlink(missing_ok=True)
    return marker


def mark_clean(marker: Path) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))


__all__ = ["CLEAN_MARK", "mark_clean", "prepare_local_store"]
