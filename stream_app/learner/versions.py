"""The learner's versions, published through the workers' hot swap (a watched directory).

Each version is a checkpoint directory ``WATCH_DIR/<model_version>/``, written under a
hidden name and renamed into place, then named in ``WATCH_DIR/LATEST``
(:func:`stream_app.worker.model_swap.point_latest`), so a worker never loads half a
checkpoint. The last ``keep`` versions stay (older ones are deleted, never the one ``LATEST``
names): ``seqstream learner rollback [--to VERSION]`` points ``LATEST`` back at one of
them, and a running learner, seeing ``LATEST`` name a version it did not publish, goes on
learning from that version (:meth:`StreamLearner.follow_rollback`).

A version directory's ``meta.json`` holds what the learner adds: ``learner.update`` (its
number), ``learner.parent`` (the version it was learned from), ``learner.events`` (events
learned since the start version), ``learner.new_items``,
``learner.evicted`` (slots given to other items: the workers' remap sends them to 0),
``learner.through`` (per partition, the next offset not learned) and ``learner.gate``. A
version the gate refused is not published; ``.refused/<version>.json`` holds its meta.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from model_core.checkpoint import read_meta, save_model
from schemas.exceptions import SeqstreamError
from stream_app.worker.model_swap import point_latest, read_latest, refused_marker


class VersionStore:
    """The versions in ``watch_dir`` (created at the first publish)."""

    def __init__(self, watch_dir: str | Path, keep: int = 5) -> None:
        self.dir = Path(watch_dir)
        self.keep = max(1, int(keep))

    def latest(self) -> str | None:
        return read_latest(self.dir)

    def versions(self) -> list[str]:
        """Version directories, oldest first (by the time they were written)."""
        if not self.dir.is_dir():
            return []
        out = [p for p in self.dir.iterdir()
               if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists()]
        return [p.name for p in sorted(out, key=lambda p: (p.stat().st_mtime_ns, p.name))]

    def path(self, version: str) -> Path:
        return self.dir / version

    def publish(self, model, meta: dict | None = None, point: bool = True) -> Path:
        """Save ``model`` as ``<model.version>/``, point ``LATEST`` at it (unless ``point``
        is False) and drop versions beyond ``keep``."""
        name = str(model.version)
        if not name or "/" in name or name.startswith("."):
            raise SeqstreamError(f"cannot publish a model whose version is {name!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.incoming"
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(model, tmp, meta=meta)
        dst = self.dir / name
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        now = time.time()
        os.utime(dst, (now, now))
        if point:
            point_latest(self.dir, name)
        self.prune()
        return dst

    def refuse(self, version: str, meta: dict) -> Path:
        """Mark ``version`` refused by the gate (not published): ``.refused/<version>.json``
        holds its meta, so a worker in lockstep knows the served version stays for the
        events that version would have scored (:class:`~stream_app.worker.model_swap.Lockstep`)."""
        path = refused_marker(self.dir, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.incoming")
        tmp.write_text(json.dumps(meta, default=str))
        os.replace(tmp, path)
        return path

    def prune(self) -> list[str]:
        """Delete the oldest versions beyond ``keep`` (never the one ``LATEST`` names)."""
        names = self.versions()
        latest = self.latest()
        drop = [n for n in names[: max(0, len(names) - self.keep)] if n != latest]
        for n in drop:
            shutil.rmtree(self.dir / n, ignore_errors=True)
        return drop

    def rollback(self, to: str | None = None) -> str:
        """Point ``LATEST`` at ``to`` (a kept version) or at the version published before
        the one it names now; returns the version now named."""
        names = self.versions()
        if not names:
            raise SeqstreamError(f"{self.dir} holds no versions to roll back to")
        current = self.latest()
        if to is None:
            if current not in names:
                raise SeqstreamError(f"LATEST names {current!r}, not a kept version: "
                                     "give --to VERSION (seqstream learner versions)")
            i = names.index(current)
            if i == 0:
                raise SeqstreamError(f"{current} is the oldest version kept; nothing before it")
            to = names[i - 1]
        elif to not in names:
            raise SeqstreamError(f"no version {to!r} in {self.dir}; kept: "
                                 + ", ".join(names[-5:]))
        point_latest(self.dir, to)
        return to

    def meta(self, version: str) -> dict:
        return read_meta(self.dir / version)


__all__ = ["VersionStore"]
