"""Drift and threshold alerts over the online metrics (pure: no Kafka, no wall clock read).

Two kinds of :class:`~schemas.alert.Alert`:

- **drift**: river's ADWIN watches the per-event hit (``hit@K`` of each scored event, 1 or 0)
  and the per-event end-to-end latency; optionally Page-Hinkley watches the hit for a fall as
  well (it reacts sooner than ADWIN but also alarms now and then on a stable 0/1 series). When
  a detector sees the level change, one alert carries the old level (the mean of what the
  detector dropped), the new level (the mean of what it kept), the event-time span of the new
  level and a plain-language message. Small changes (below ``min_hit_change`` /
  ``min_latency_change``) and changes within ``cooldown`` observations of the previous alert
  on the same metric are not raised (the detector still resets).
- **threshold**: a closed window whose latency p99 or dead-letter rate is above its limit.
  One alert when the limit is first crossed; the next is raised only after a window back
  under the limit.

The latest observations (``rolling_window`` of each) give the current levels on request
(:meth:`AlertMonitor.levels`: mean hit, latency p50/p99); a Page-Hinkley change reports the
hit levels before and after it from the detector's own window.

The worker calls :meth:`AlertMonitor.observe_batch` per micro-batch and
:meth:`AlertMonitor.observe_window` per closed window, and publishes what they return on the
``alerts`` topic. Offline, feed a prequential run the same way (see ``tests/test_alerts.py``).
"""

from __future__ import annotations

import bisect
import datetime as _dt
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from river import drift

from model_core.metrics import hit_at, percentiles
from schemas.alert import Alert
from schemas.metrics import MetricsWindow


@dataclass(frozen=True)
class AlertConfig:
    hit_k: int = 10  # the drift detectors watch hit@hit_k
    hit_delta: float = 0.002  # ADWIN confidence on the hit (smaller = fewer, surer alerts)
    latency_delta: float = 0.002  # ADWIN confidence on the latency
    page_hinkley: bool = False  # also run Page-Hinkley on the hit
    ph_threshold: float = 50.0  # Page-Hinkley lambda (on 0/1 hits)
    ph_recent: int = 200  # Page-Hinkley: the new level is the mean of this many last hits
    min_hit_change: float = 0.08  # smallest |new - old| hit rate that is raised
    min_latency_change: float = 0.5  # smallest relative latency change that is raised
    min_latency_change_ms: float = 50.0  # ... and absolute
    cooldown: int = 500  # observations of a metric between two of its drift alerts
    rolling_window: int = 1000  # levels() summarise this many latest observations
    latency_p99_limit_ms: float = 0.0  # threshold alert on a window's p99 (0 = off)
    dead_letter_rate_limit: float = 0.0  # threshold alert on a window's dead-letter rate (0 = off)
    max_span_memory: int = 100_000  # event times kept to date the start of a new level
    max_buffer: int = 200_000  # observations held back to feed partitions in event-time order

    @classmethod
    def from_settings(cls, settings) -> AlertConfig:
        """From :class:`stream_app.settings.Settings` (its ``alert_*`` fields)."""
        return cls(
            hit_k=settings.alert_hit_k,
            hit_delta=settings.alert_drift_delta,
            latency_delta=settings.alert_drift_delta,
            page_hinkley=settings.alert_page_hinkley,
            latency_p99_limit_ms=settings.alert_latency_p99_ms,
            dead_letter_rate_limit=settings.alert_dead_letter_rate,
        )


def _fmt_time(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _fmt_span(start_ms: int, end_ms: int) -> str:
    a, b = _fmt_time(start_ms), _fmt_time(end_ms)
    if a[:10] == b[:10]:
        b = b[11:]
    return f"{a} – {b}"


class _Watch:
    """One ADWIN over one per-event series, with the values and event times it keeps.

    river's ADWIN forgets everything after a detection (it resets on the next update), so a
    change detected early, when only a few observations of the new level are in, would leave
    no reference to compare the rest against. Here the detector is rebuilt from the part of
    its window that it kept — the usual ADWIN behaviour: drop the old sub-window, go on.
    """

    def __init__(self, metric: str, delta: float, memory: int) -> None:
        self.metric = metric
        self.delta = delta
        self.adwin = drift.ADWIN(delta=delta)
        self.values: deque[float] = deque(maxlen=memory)
        self.times: deque[int] = deque(maxlen=memory)
        self.since_alert = 0
        self.n = 0
        self.width = 0  # the detector's window (tracked: reading it from river costs)

    def update(self, x: float, ts_ms: int) -> tuple[float, float, int, int, int] | None:
        """Feed one value; on a detected change return (old, new, start_ms, end_ms, n_new)."""
        a = self.adwin
        a.update(x)
        self.values.append(x)
        self.times.append(ts_ms)
        self.n += 1
        self.since_alert += 1
        self.width += 1  # ADWIN's width: it only shrinks when it detects a change
        if not a.drift_detected:
            return None
        width0 = self.width
        width1 = self.width = int(a.width)
        new = a.estimation
        # the detector's window, oldest first (as far as remembered): read from the deque's
        # end, never the whole deque (it holds up to max_span_memory values, and detections
        # come every few dozen events while latency climbs)
        vals = list(islice(reversed(self.values), width0))[::-1]
        # the dropped sub-window: the values before the kept ones
        dropped = vals[:max(0, len(vals) - width1)]
        old = sum(dropped) / len(dropped) if dropped else float("nan")
        kept = min(width1, len(self.times))
        # the span of the new level (min/max: observations fed before every partition was
        # seen can be slightly out of order)
        recent = list(islice(reversed(self.times), kept)) if kept else [ts_ms]
        start, end = min(recent), max(recent)
        # rebuild from the kept observations (a change inside them is found on later updates)
        self.adwin = fresh = drift.ADWIN(delta=self.delta)
        for v in vals[len(vals) - min(kept, len(vals)):]:
            fresh.update(v)
        # a change found while rebuilding: river resets the detector on its next update
        self.width = 0 if fresh.drift_detected else int(fresh.width)
        return old, new, start, end, width1


def model_failure_alert(model_version: str, reason: str, now_ms: int) -> Alert:
    """A batch whose every model call failed: its events went to dead-letters."""
    return Alert(metric="model_failure", kind="threshold", detector="threshold",
                 old_level=None, new_level=1.0, window_start_ms=now_ms, window_end_ms=now_ms,
                 message=f"{reason}; the batch's events went to dead-letters with this reason. "
                         "Check the model (seqstream evaluate on a recent log) or swap it.",
                 severity="critical", model_version=model_version, emitted_at_ms=now_ms)


def model_swap_alert(model_version: str, reason: str, now_ms: int) -> Alert:
    """A model swap that was refused (bad record, bad checkpoint): the old model serves."""
    return Alert(metric="model_swap", kind="threshold", detector="threshold",
                 old_level=None, new_level=1.0, window_start_ms=now_ms, window_end_ms=now_ms,
                 message=reason, severity="critical", model_version=model_version,
                 emitted_at_ms=now_ms)


class AlertMonitor:
    """Drift detectors, rolling statistics and threshold checks; returns :class:`Alert` s."""

    def __init__(self, config: AlertConfig | None = None, model_version: str = "") -> None:
        self.config = cfg = config or AlertConfig()
        self.model_version = model_version
        self.hit_metric = f"hit@{cfg.hit_k}"
        self._hit = _Watch(self.hit_metric, cfg.hit_delta, cfg.max_span_memory)
        self._latency = _Watch("latency_ms", cfg.latency_delta, cfg.max_span_memory)
        self._ph = drift.PageHinkley(threshold=cfg.ph_threshold, mode="down") \
            if cfg.page_hinkley else None
        self._ph_count = 0  # hits since the last Page-Hinkley change
        self._ph_since_alert = 0
        # the last rolling_window observations, summarised when read (levels): appending a
        # batch is one C call, where a river rolling statistic costs a call per observation
        self._recent_hits: deque[float] = deque(maxlen=cfg.rolling_window)
        self._recent_latencies: deque[float] = deque(maxlen=cfg.rolling_window)
        self._breached: dict[tuple[str, str | None], bool] = {}
        self.n_alerts = 0
        self._buffer: list[tuple[int, int, int, float]] = []  # (ts, seq, 0 hit/1 latency, value)
        self._part_watermark: dict[int, int] = {}
        self._seq = 0

    # ------------------------------------------------------------------ per event
    def observe_hits(self, ranks: Iterable[float], timestamps_ms: Iterable[int],
                     now_ms: int = 0) -> list[Alert]:
        """One rank per scored event (1-based; 0 = miss), with the event's time."""
        cfg = self.config
        out: list[Alert] = []
        hits = [hit_at(rank, cfg.hit_k) for rank in ranks]
        self._recent_hits.extend(hits)
        for hit, ts in zip(hits, timestamps_ms, strict=True):
            got = self._hit.update(hit, int(ts))
            if got is not None:
                old, new, start, end, n_new = got
                if (abs(new - old) >= cfg.min_hit_change
                        and self._hit.since_alert > cfg.cooldown):
                    out.append(self._drift_alert(self.hit_metric, "adwin", old, new, start,
                                                 end, n_new, now_ms, rate=True))
                    self._hit.since_alert = 0
            if self._ph is not None:
                out.extend(self._page_hinkley(hit, int(ts), now_ms))
        return out

    def _page_hinkley(self, hit: float, ts: int, now_ms: int) -> list[Alert]:
        """Page-Hinkley on the hit (falls only). Levels: the last ``ph_recent`` hits against
        the hits before them since the previous Page-Hinkley change."""
        cfg = self.config
        ph = self._ph
        ph.update(hit)
        self._ph_count += 1
        self._ph_since_alert += 1
        if not ph.drift_detected:
            return []
        count = min(self._ph_count, len(self._hit.values))
        self._ph_count = 0
        recent = min(cfg.ph_recent, count // 2)
        if recent < 1:
            return []
        vals = list(self._hit.values)[len(self._hit.values) - count:]
        old = sum(vals[:-recent]) / (count - recent)
        new = sum(vals[-recent:]) / recent
        times = list(self._hit.times)[len(self._hit.times) - recent:]
        if abs(new - old) < cfg.min_hit_change or self._ph_since_alert <= cfg.cooldown:
            return []
        self._ph_since_alert = 0
        return [self._drift_alert(self.hit_metric, "page_hinkley", old, new, min(times),
                                  max(times), recent, now_ms, rate=True)]

    def observe_latencies(self, latencies_ms: Iterable[float], timestamps_ms: Iterable[int],
                          now_ms: int = 0) -> list[Alert]:
        """End-to-end latency of each event (ms), with the event's time."""
        cfg = self.config
        out: list[Alert] = []
        lats = [float(lat) for lat in latencies_ms]
        self._recent_latencies.extend(lats)
        for lat, ts in zip(lats, timestamps_ms, strict=True):
            got = self._latency.update(lat, int(ts))
            if got is None:
                continue
            old, new, start, end, n_new = got
            change = abs(new - old)
            if (change >= cfg.min_latency_change_ms
                    and change >= cfg.min_latency_change * max(abs(old), 1e-9)
                    and self._latency.since_alert > cfg.cooldown):
                out.append(self._drift_alert("latency_ms", "adwin", old, new, start, end,
                                             n_new, now_ms, rate=False))
                self._latency.since_alert = 0
        return out

    def observe_batch(self, events: Sequence, result, latencies_ms: Sequence[float],
                      now_ms: int = 0, partitions: Sequence[int] | None = None) -> list[Alert]:
        """One processed micro-batch (``events``, its :class:`BatchResult`, latencies).

        ``partitions[i]``: the input partition of ``events[i]``. With it, observations are
        fed to the detectors in event-time order: each partition is in order, but a worker
        reads partitions unevenly (a replay can have one partition hours of event time ahead
        of another), and a detector fed in processing order would compare levels of
        different times. They are held until every partition seen has passed their event
        time (:meth:`flush` releases the rest; at most ``max_buffer`` are held). Without
        ``partitions`` the batch is taken to be in order (offline, one partition).
        """
        if result is None or not events:
            return []
        dup = set(result.duplicates)
        if partitions is None:
            scores = result.scores
            out = self.observe_hits([s.rank for s in scores],
                                    [events[s.index].timestamp_ms for s in scores], now_ms)
            idx = [i for i in range(len(events)) if i not in dup]
            out += self.observe_latencies([latencies_ms[i] for i in idx],
                                          [events[i].timestamp_ms for i in idx], now_ms)
            return out
        marks = self._part_watermark
        for i, ev in enumerate(events):  # each partition's latest event time
            ts = ev.timestamp_ms
            part = partitions[i]
            if ts > marks.get(part, -(1 << 62)):
                marks[part] = ts
        seq = self._seq
        new = [(ev.timestamp_ms, seq + i, 1, float(latencies_ms[i]))
               for i, ev in enumerate(events) if i not in dup]
        seq += len(events)
        new += [(events[sc.index].timestamp_ms, seq + j, 0, float(sc.rank))
                for j, sc in enumerate(result.scores)]
        self._seq = seq + len(result.scores)
        buf = self._buffer
        buf += new
        buf.sort()  # (time, arrival): both parts are nearly sorted, a cheap merge
        return self._release(min(marks.values()), now_ms)

    def flush(self, now_ms: int = 0) -> list[Alert]:
        """Feed every held observation (the input is idle, or the worker stops)."""
        return self._release(None, now_ms)

    def forget_partitions(self) -> None:
        """After a rebalance: partitions may have moved away; wait only for those seen next."""
        self._part_watermark.clear()

    def _release(self, upto_ms: int | None, now_ms: int) -> list[Alert]:
        """Feed the held observations up to event time ``upto_ms`` (all when None), and the
        oldest beyond ``max_buffer``, in (event time, arrival) order."""
        buf = self._buffer
        if upto_ms is None:
            n = len(buf)
        else:
            n = max(bisect.bisect_right(buf, (upto_ms, 1 << 62)), len(buf) - self.config.max_buffer)
        if n <= 0:
            return []
        out_now, self._buffer = buf[:n], buf[n:]
        hits = [(ts, v) for ts, _, kind, v in out_now if kind == 0]
        lats = [(ts, v) for ts, _, kind, v in out_now if kind == 1]
        out = self.observe_hits([v for _, v in hits], [ts for ts, _ in hits],
                                now_ms) if hits else []
        if lats:
            out += self.observe_latencies([v for _, v in lats], [ts for ts, _ in lats], now_ms)
        return out

    @property
    def held(self) -> int:
        """Observations waiting for the slowest partition."""
        return len(self._buffer)

    # ------------------------------------------------------------------ per window
    def observe_window(self, w: MetricsWindow, now_ms: int = 0,
                       source: str | None = None) -> list[Alert]:
        """Threshold checks on one closed window (tumbling windows only).

        ``source``: where the window comes from when there are several series of windows
        (the worker's are per input partition, e.g. ``"p2"``); each series crosses a limit
        on its own (otherwise a partition under the limit would re-arm another's alert).
        """
        if w.window_kind != "tumbling":
            return []
        cfg = self.config
        out = []
        span = _fmt_span(w.window_start_ms, w.window_end_ms)
        where = f" (input partition {source[1:]})" if source and source.startswith("p") \
            else (f" ({source})" if source else "")
        if cfg.latency_p99_limit_ms > 0 and w.latency_p99_ms is not None:
            out += self._threshold(
                "latency_p99_ms", source, w.latency_p99_ms, cfg.latency_p99_limit_ms, w, now_ms,
                f"End-to-end latency p99 was {w.latency_p99_ms:,.0f} ms in the window {span}"
                f"{where}, above the {cfg.latency_p99_limit_ms:,.0f} ms limit "
                f"({w.events} events; p50 {w.latency_p50_ms or 0:,.0f} ms).")
        if cfg.dead_letter_rate_limit > 0 and (w.events + w.dead_letters) > 0:
            out += self._threshold(
                "dead_letter_rate", source, w.dead_letter_rate, cfg.dead_letter_rate_limit, w,
                now_ms,
                f"{w.dead_letter_rate:.1%} of the records in the window {span}{where} were "
                f"dead-lettered ({w.dead_letters} of {w.events + w.dead_letters}), above the "
                f"{cfg.dead_letter_rate_limit:.1%} limit: check the producers and the "
                "dead-letters topic for the reasons.")
        return out

    def observe_windows(self, windows: Iterable[MetricsWindow], now_ms: int = 0,
                        sources: Iterable[str | None] | None = None) -> list[Alert]:
        out: list[Alert] = []
        srcs = iter(sources) if sources is not None else None
        for w in windows:
            out += self.observe_window(w, now_ms, next(srcs) if srcs is not None else None)
        return out

    def _threshold(self, metric: str, source: str | None, value: float, limit: float,
                   w: MetricsWindow, now_ms: int, message: str) -> list[Alert]:
        above = value > limit
        was = self._breached.get((metric, source), False)
        self._breached[(metric, source)] = above
        if not above or was:
            return []
        self.n_alerts += 1
        return [Alert(metric=metric, kind="threshold", detector="threshold", old_level=limit,
                      new_level=float(value), window_start_ms=w.window_start_ms,
                      window_end_ms=w.window_end_ms, message=message, severity="critical",
                      direction="up", n_observations=w.events,
                      model_version=w.model_version or self.model_version,
                      emitted_at_ms=now_ms)]

    # ------------------------------------------------------------------ helpers
    def _drift_alert(self, metric: str, detector: str, old: float, new: float, start: int,
                     end: int, n_new: int, now_ms: int, rate: bool) -> Alert:
        self.n_alerts += 1
        up = new > old
        span = _fmt_span(start, end)
        name = "ADWIN" if detector == "adwin" else "Page-Hinkley"
        if rate:
            what = f"The online hit rate ({metric})"
            levels = f"{old:.1%} to {new:.1%}"
            hint = ("" if up else " The model may no longer match how users behave "
                    "(or the input changed): compare with the previous days, consider "
                    "retraining.")
            severity = "info" if up else "warning"
        else:
            what = "End-to-end latency"
            levels = f"{old:,.0f} ms to {new:,.0f} ms (mean)"
            hint = (" Check consumer lag, the worker's CPU and the batch settings." if up
                    else "")
            severity = "warning" if up else "info"
        message = (f"{what} {'rose' if up else 'fell'} from {levels}; {name} detected the "
                   f"change over {n_new:,} events in {span}.{hint}")
        return Alert(metric=metric, kind="drift", detector=detector, old_level=float(old),
                     new_level=float(new), window_start_ms=int(start), window_end_ms=int(end),
                     message=message, severity=severity, direction="up" if up else "down",
                     n_observations=int(n_new), model_version=self.model_version,
                     emitted_at_ms=now_ms)

    def levels(self) -> dict[str, float | None]:
        """Current levels over the last ``rolling_window`` observations: mean hit, latency
        p50/p99 (nearest rank, as the windows and offline figures); None before any
        observation."""
        hits = self._recent_hits
        p50, p99 = percentiles(self._recent_latencies, (50, 99))
        return {
            f"{self.hit_metric}_rolling": sum(hits) / len(hits) if hits else None,
            "latency_p50_ms_rolling": p50,
            "latency_p99_ms_rolling": p99,
            "hit_observations": self._hit.n,
            "latency_observations": self._latency.n,
        }


__all__ = ["AlertConfig", "AlertMonitor"]
