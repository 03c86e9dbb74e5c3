"""The stream learner without Kafka: events in, versions out (``seqstream learner``'s core).

    driver = StreamLearner(model, LearnSchedule(every=250), VersionStore(watch_dir))
    driver.warm(train_events)
    published = driver.offer(records, lag)      # records: (event, partition, offset)

The driver cuts the stream into micro-batches of exactly ``schedule.every`` events (also a
shorter one after ``interval_s`` seconds without a full one, when set) and hands each to the
same :class:`~model_core.learn.OnlineLearner` the offline replay uses
(``seqstream evaluate --protocol prequential --learn``), so without a time trigger, a gate or
skipped events the stream updates the model after the same events as the replay. Each update
becomes a version ``<start version>+uN`` in the workers' watched directory
(:class:`~stream_app.learner.versions.VersionStore`) — at once, or, with the validation gate
(the schedule's ``gate``, off by default: :mod:`model_core.learn.gate`, the
same code the offline replay runs), after it has been scored on the next micro-batch; a
refused version is not published and a marker names it (``VersionStore.refuse``), so a
worker in lockstep knows the served version stays.

Starting from a learner version ``X+uN`` (a restart), numbering goes on at ``X+u(N+1)``
unless that name is taken (the learner was rolled back): then versions are ``X+uN+u1``, ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from model_core.learn import LearnSchedule, OnlineLearner
from model_core.learn.gate import Gate
from schemas.alert import Alert
from stream_app.learner.pace import LagPolicy, keep_event
from stream_app.learner.versions import VersionStore

log = logging.getLogger("seqstream.learner")


@dataclass
class LearnerStats:
    events_in: int = 0  # valid events taken
    events_learned: int = 0
    skipped: int = 0  # not learned: subsampled out or jumped over (behind the stream)
    erased: int = 0  # erase requests carried out
    erased_events: int = 0  # held events of erased users, dropped before they were learned
    updates: int = 0
    published: int = 0
    refused: int = 0  # versions the gate did not publish
    rollbacks: int = 0  # rollbacks followed
    learn_seconds: float = 0.0  # wall time inside updates
    lag: int = 0  # events behind the end of the topic, last measured
    lag_alerts: int = 0
    last_version: str = ""


class StreamLearner:
    """See the module docstring. ``on_alert`` receives each :class:`Alert`."""

    def __init__(self, model, schedule: LearnSchedule, store: VersionStore, *,
                 top_k: int = 20, exclude_history: bool = False, max_len: int | None = None,
                 interval_s: float = 0.0,
                 pace: LagPolicy | None = None,
                 on_alert: Callable[[Alert], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, texts=None) -> None:
        self.schedule = schedule
        self.texts = texts  # item metadata texts (model_core.learn.texts), kept across rollbacks
        self.store = store
        self.top_k = top_k
        self.exclude_history = exclude_history
        self.max_len = max_len  # the learner's sequences (default: the model's max_len)
        self.interval_s = interval_s
        self.pace = pace or LagPolicy()
        self.on_alert = on_alert or (lambda _a: None)
        self.clock = clock
        self.stats = LearnerStats()
        self.buf: list = []  # (event, partition, offset) not yet learned
        self.through: dict[int, int] = {}  # partition -> next offset, learned
        self.published_through: dict[int, int] = {}  # ... in the newest published version
        self._start(model)

    def _start(self, model) -> None:
        self.learner = OnlineLearner(model, self.schedule, max_len=self.max_len,
                                     texts=self.texts)
        head, _, n = str(model.version).rpartition("+u")
        if head and n.isdigit() and not self.store.path(f"{head}+u{int(n) + 1}").exists():
            self.learner.base_version, self.learner.n_updates = head, int(n)
        self.gate = Gate(self.learner, self.top_k, self.exclude_history)
        self.candidate: dict | None = None  # a version waiting for the gate: its meta
        self.last_published = str(model.version)
        self._last_step = self.clock()

    @property
    def model(self):
        return self.learner.model

    def warm(self, events: Iterable) -> None:
        """The training log as history (see :meth:`OnlineLearner.warm`)."""
        self.learner.warm(events)

    # ------------------------------------------------------------------ input
    def offer(self, records: Iterable, lag: int = 0) -> list[str]:
        """Take ``(event, partition, offset)`` records in stream order; returns the versions
        published meanwhile."""
        self.observe_lag(lag)
        share = self.pace.share(lag)
        for rec in records:
            self.stats.events_in += 1
            ev, part, off = rec
            if keep_event(ev.event_id, share):
                self.buf.append(rec)
            else:
                self.stats.skipped += 1
                self.through[part] = max(self.through.get(part, 0), off + 1)
        out = []
        every = self.schedule.every
        while len(self.buf) >= every:
            batch, self.buf = self.buf[:every], self.buf[every:]
            out += self._step(batch)
        return out + self.tick()

    def tick(self) -> list[str]:
        """A time-triggered update of the events held, when ``interval_s`` has passed."""
        if self.interval_s and self.buf and self.clock() - self._last_step >= self.interval_s:
            batch, self.buf = self.buf, []
            return self._step(batch)
        return []

    def skipped_to_end(self, n: int, ends: dict[int, int]) -> None:
        """The service jumped ``n`` events to the ends of the partitions (policy ``skip``);
        the events held are dropped with them."""
        self.stats.skipped += n + len(self.buf)
        self.buf = []
        for part, off in ends.items():
            self.through[part] = max(self.through.get(part, 0), off)

    def erase(self, user: str, taken: list | None = None) -> int:
        """An erase request for ``user`` (the key the learner holds: the keyed hash with
        pseudonymous ids): its sequence (and session-kNN's streamed session) leaves the
        learner and its events held for the next micro-batch are dropped, never learned (else
        learning them would bring the sequence back), and so are its records in ``taken``
        (the ``(event, partition, offset)`` records of the poll that held the request, not
        yet offered: removed in place), all counted once in ``erased_events``. Returns how
        many events were dropped. Versions already published keep what they learned, as the
        workers' model does."""
        dropped = self.learner.forget_user(user)
        self.gate.learnt_users.discard(user)  # nor is it kept as "learnt since served"
        for records in (self.buf, taken or []):
            kept = [r for r in records if r[0].user_id != user]
            dropped += len(records) - len(kept)
            records[:] = kept
        self.stats.erased += 1
        self.stats.erased_events += dropped
        return dropped

    def observe_lag(self, lag: int) -> None:
        self.stats.lag = lag
        if self.pace.observe(lag):
            self.stats.lag_alerts += 1
            now = int(time.time() * 1000)
            self.on_alert(Alert(
                metric="learner_lag", kind="threshold", detector="threshold",
                old_level=float(self.pace.max_lag), new_level=float(lag), window_start_ms=now,
                window_end_ms=now, severity="warning", direction="up",
                model_version=self.learner.version, emitted_at_ms=now,
                message=(f"the learner is {lag:,} events behind the stream (bound "
                         f"{self.pace.max_lag:,}); policy {self.pace.policy}: "
                         + {"subsample": "it learns a share of the events",
                            "skip": "it jumps to the end of the topic",
                            "alert": "it learns every event"}[self.pace.policy]
                         + ". Give it a faster schedule (fewer steps, larger every=) or a "
                         "counting model.")))

    # ------------------------------------------------------------------ one micro-batch
    def _step(self, batch: list) -> list[str]:
        self._last_step = self.clock()
        events = [r[0] for r in batch]
        parent = self.learner.version
        out = []
        if self.gate.held:  # the gate: score it on events it has not learned
            out += self._decide(events)
        updates = self.learner.learn(events)
        if not updates and self.learner.pending:
            updates = [self.learner.update()]
        for _, part, off in batch:
            self.through[part] = max(self.through.get(part, 0), off + 1)
        for upd in updates:
            self.stats.updates += 1
            self.stats.events_learned += upd.events
            self.stats.learn_seconds += upd.seconds
        if not updates:
            return out
        upd = updates[-1]
        held = self.candidate["learner"] if self.candidate is not None else None
        meta = {"learner": {
            "update": self.learner.n_updates, "events": self.learner.events_learned,
            # what a worker serving the last published version needs: the items born and
            # the slots reused since it, refused versions included (the gate)
            "parent": self.last_published if held is not None else parent,
            "new_items": (held["new_items"] if held else []) + [i for u in updates
                                                                for i in u.new_items],
            "evicted": (held["evicted"] if held else []) + [s for u in updates
                                                             for s in u.evicted],
            "loss": upd.loss, "through": {str(p): o for p, o in sorted(self.through.items())},
            "schedule": self.schedule.to_dict()}}
        self.candidate = None
        if self.gate.hold([s for u in updates for s in u.evicted],
                          [x for u in updates for x in u.users]):
            out.append(self._publish(meta))
        else:
            self.candidate = meta
        return out

    def _decide(self, window: list) -> list[str]:
        meta = self.candidate
        res = self.gate.decide(window)
        meta["learner"]["gate"] = res.to_dict()
        if res.passed:
            self.candidate = None
            return [self._publish(meta)]
        # refused: learning goes on from it; the next version carries its meta forward
        self.stats.refused += 1
        self.store.refuse(self.learner.version, meta)
        now = int(time.time() * 1000)
        msg = (f"learner version {self.learner.version} not published: HR@{self.top_k} "
               f"{res.candidate_hr:.4f} on the {res.n} newest events against "
               f"{res.served_hr:.4f} for the served {self.last_published} (margin "
               f"{res.margin}); the served version stays, learning goes on. Roll back "
               "with seqstream learner rollback if the served one is worse too.")
        log.warning("%s", msg)
        self.on_alert(Alert(
            metric="learner_gate", kind="threshold", detector="threshold",
            old_level=res.served_hr, new_level=res.candidate_hr,
            window_start_ms=min(e.timestamp_ms for e in window),
            window_end_ms=max(e.timestamp_ms for e in window) + 1, message=msg,
            severity="warning", direction="down", n_observations=res.n,
            model_version=self.learner.version, emitted_at_ms=now))
        return []

    def _publish(self, meta: dict) -> str:
        self.gate.take_evicted()  # carried in meta["learner"]["evicted"]
        self.store.publish(self.model, meta=meta)
        version = self.learner.version
        self.last_published = version
        self.published_through = {int(p): o for p, o in meta["learner"]["through"].items()}
        self.stats.published += 1
        self.stats.last_version = version
        log.info("published %s (%d events learned)", version, self.learner.events_learned)
        return version

    # ------------------------------------------------------------------ rollback
    def follow_rollback(self, load: Callable[[str], object]) -> str | None:
        """When ``LATEST`` names a kept version this learner did not publish last (someone
        ran ``seqstream learner rollback``), learning goes on from that version (``load``:
        its directory -> model); the learner's user sequences and replay buffer start
        afresh, the events held are learned by it."""
        latest = self.store.latest()
        if latest is None or latest == self.last_published:
            return None
        path = self.store.path(latest)
        if not (path / "meta.json").exists():
            return None
        self._start(load(str(path)))
        self.stats.rollbacks += 1
        log.warning("LATEST names %s: learning goes on from it (rolled back)", latest)
        return latest

    def summary(self) -> dict:
        s = asdict(self.stats)
        s["learn_seconds"] = round(s["learn_seconds"], 3)
        s["learned_per_s"] = (round(self.stats.events_learned / self.stats.learn_seconds, 1)
                              if self.stats.learn_seconds > 0 else None)
        s["version"] = self.learner.version
        s["items"] = self.model.vocab.n_items
        if self.texts is not None:  # items started from their text, texts held
            s["item_texts"] = self.texts.summary()
        return s


__all__ = ["LearnerStats", "StreamLearner"]
