"""Replay a recorded log into the ``events`` topic, keyed by user, in event-time order.

Full speed or paced at N x real time (event-time gaps divided by N), with a progress bar and a
final count of sent and rejected lines. Rejected lines go to the ``dead-letters`` topic with
the reason and the original bytes (``source="replay"``, ``topic`` = the file,
``offset`` = the line number), so nothing is silently dropped.

Events of a log without ids are named by file stem, line number and a hash of the line
(:func:`model_core.datasets._base.line_event_id`): another file with the same name gives other
ids, a re-sent file the same ones, which the worker recognises as redeliveries (counted in
``seqstream_duplicates_total``, not as new events). :func:`replay_file` also says so up front:
it keeps a ledger of the files it has replayed (``<data_dir>/replayed.jsonl``: content hash,
path, broker, topic, events sent, time) and reports a file whose content was already replayed
to the same topic (:attr:`ReplayReport.resent_of`). The ledger is this machine's: a file
replayed from elsewhere is recognised by the worker only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaProducer

from model_core.datasets import Rejected, iter_log
from schemas.dead_letter import DeadLetter
from schemas.event import Event
from stream_app.kafka.security import kafka_python_kwargs
from stream_app.kafka.topics import ensure_topics
from stream_app.settings import Settings


@dataclass
class ReplayReport:
    sent: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rejected_reasons: list[str] | None = None
    sha256: str | None = None  # of the replayed file
    resent_of: dict | None = None  # the ledger entry of an earlier replay of the same content

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    kw = dict(bootstrap_servers=settings.bootstrap_servers, linger_ms=5,
              batch_size=256 * 1024, acks=1, max_request_size=4 * 1024 * 1024,
              retries=5)
    kw.update(kafka_python_kwargs(settings))
    kw.update(overrides)
    return KafkaProducer(**kw)


def load_sorted(path: str | Path, fmt: str, **opts) -> tuple[list[Event], list[Rejected]]:
    """Read a log; events stably sorted by event time, rejected lines kept in file order.

    Rows an action mapping drops on purpose (``actions={"x": null}``) are neither events nor
    rejected: they are not bad input, so they do not go to the dead letters.
    """
    events: list[Event] = []
    rejected: list[Rejected] = []
    for item in iter_log(path, fmt, **opts):
        if isinstance(item, Rejected):
            if not item.dropped:
                rejected.append(item)
        else:
            events.append(item)
    events.sort(key=lambda e: e.timestamp_ms)
    return events, rejected


def load_guessed(path: str | Path, fmt: str | None, option: str,
                 format_hint: str) -> tuple[list[Event], list[Rejected], str, str]:
    """:func:`load_sorted` of a log given without reader flags (``demo --data``, ``learner
    --warm``), read as ``train`` reads it (:func:`model_core.datasets.reading_for`):
    ``(events, rejected, format, how)``, ``how`` the guessed flags or "". A file it cannot
    read, or one without a valid event, is one :class:`SeqstreamError` line naming
    ``option`` and the file, with ``format_hint`` (where the format is given) to mend it."""
    from model_core.datasets import reading_for
    from model_core.exceptions import ModelCoreError
    from schemas.exceptions import SeqstreamError

    try:
        fmt, opts, how = reading_for(path, fmt)
        events, rejected = load_sorted(path, fmt, **opts)
    except (ModelCoreError, OSError) as e:
        text = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
        hint = (f" (`seqstream inspect {path}` shows how it reads; {format_hint} names the "
                "format)") if Path(path).is_file() else ""
        raise SeqstreamError(f"{option} {text}{hint}") from None
    if not events:
        first = f"; first: line {rejected[0].line_no}: {rejected[0].reason}" \
            if rejected else ""
        raise SeqstreamError(f"{option} {path}: no valid event in it as format {fmt!r} "
                             f"({len(rejected)} rejected rows{first})")
    return events, rejected, fmt, how


def replay_events(settings: Settings, events: Sequence[Event], speed: float | None = None,
                  rejected: Iterable[Rejected] = (), source: str = "replay",
                  progress: bool = True, producer: KafkaProducer | None = None,
                  on_progress: Callable[[int], None] | None = None,
                  raw_values: Sequence[bytes] | None = None) -> ReplayReport:
    """Send ``events`` (already in the order wanted) to the events topic.

    ``speed``: None or 0 = as fast as possible; N = N x real time by event-time gaps.
    ``raw_values`` (optional, aligned with ``events``) are sent instead of the re-serialized
    events, e.g. to pass file lines through verbatim.
    """
    ensure_topics(settings)
    own = producer is None
    producer = producer or make_producer(settings)
    topic = settings.topic("events")
    report = ReplayReport(rejected_reasons=[])
    t0 = time.monotonic()
    bar = _progress(len(events), progress)
    try:
        dl_topic = settings.topic("dead-letters")
        for r in rejected:
            report.rejected += 1
            if len(report.rejected_reasons) < 20:
                report.rejected_reasons.append(f"line {r.line_no}: {r.reason}")
            dl = DeadLetter.of(r.raw, r.reason, source, -1, r.line_no,
                               failed_at_ms=int(time.time() * 1000), source="replay")
            producer.send(dl_topic, value=dl.to_json())
        first_ts = events[0].timestamp_ms if events else 0
        send = producer.send
        for i, ev in enumerate(events):
            if speed:
                due = t0 + (ev.timestamp_ms - first_ts) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            value = raw_values[i] if raw_values is not None else ev.to_json()
            send(topic, key=ev.user_id.encode(), value=value)
            report.sent += 1
            if bar is not None and (i & 1023) == 1023:
                bar.update(1024)
            if on_progress is not None and (i & 1023) == 1023:
                on_progress(i + 1)
        producer.flush()
        if bar is not None:
            bar.update(len(events) - bar.n)
    finally:
        if bar is not None:
            bar.close()
        if own:
            producer.close()
    report.seconds = time.monotonic() - t0
    return report


def paced_seconds(events: Sequence[Event], speed: float | None) -> float | None:
    """How long sending ``events`` (sorted by time) takes at ``speed`` x real time: their
    event-time span divided by the speed (the sends themselves are not counted); None at
    full speed."""
    if not speed or not events:
        return None
    return (events[-1].timestamp_ms - events[0].timestamp_ms) / 1000.0 / speed


def replay_file(settings: Settings, path: str | Path, fmt: str, speed: float | None = None,
                progress: bool = True, limit: int | None = None,
                before_send: Callable[[int, float | None], None] | None = None,
                **opts) -> ReplayReport:
    """Replay one log file; the report names an earlier replay of the same content to the
    same topic (``resent_of``), whose events the worker will count as duplicates.
    ``before_send(n_events, paced_seconds)`` is called once the file is read and before
    anything goes to Kafka (the CLI checks the broker there and prints the estimate, so a
    file it cannot read is reported without a network)."""
    events, rejected = load_sorted(path, fmt, **opts)  # first: a missing file is one line
    digest = file_sha256(path)
    target = {"broker": ";".join(settings.bootstrap_servers),
              "topic": settings.topic("events")}
    earlier = find_replay(settings, digest, target)
    if limit is not None:
        events = events[:limit]
    if before_send is not None:
        before_send(len(events), paced_seconds(events, speed))
    report = replay_events(settings, events, speed=speed, rejected=rejected, source=str(path),
                           progress=progress)
    report.sha256, report.resent_of = digest, earlier
    if report.sent:
        _record_replay(settings, {"sha256": digest, **target, "path": str(Path(path).resolve()),
                                  "sent": report.sent, "at": time.strftime(
                                      "%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return report


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _ledger(settings: Settings) -> Path:
    return Path(settings.data_dir) / "replayed.jsonl"


def find_replay(settings: Settings, digest: str, target: dict) -> dict | None:
    """The latest ledger entry of a replay of content ``digest`` to ``target``, or None.
    A damaged ledger line is skipped (the ledger only informs)."""
    found = None
    try:
        lines = _ledger(settings).read_bytes().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if (isinstance(entry, dict) and entry.get("sha256") == digest
                and all(entry.get(k) == v for k, v in target.items())):
            found = entry
    return found


def _record_replay(settings: Settings, entry: dict) -> None:
    path = _ledger(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(orjson.dumps(entry) + b"\n")
    except OSError as e:  # the replay itself succeeded: say so, do not fail it
        print(f"note: could not record the replay in {path}: {e}")


class _Bar:
    """A small rich progress bar with an ``update(n)`` / ``close()`` interface."""

    def __init__(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.n = 0
        self._p = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._task = self._p.add_task("replay", total=total)
        self._p.start()

    def update(self, k: int) -> None:
        self.n += k
        self._p.update(self._task, advance=k)

    def close(self) -> None:
        self._p.stop()


def _progress(total: int, enabled: bool) -> _Bar | None:
    if not enabled or total == 0:
        return None
    return _Bar(total)
