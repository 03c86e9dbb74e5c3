"""A static report of the metrics topic: PNG plots (matplotlib, Agg) and an ``index.html``.

    windows (metrics topic, or a saved JSONL of it) + alerts
        → quality.png     HR@K, NDCG@K, MRR@K per window over event time, alerts marked
        → latency.png     end-to-end latency p50 / p95 / p99 per window, alerts marked
        → throughput.png  events/s and dead letters per window, alerts marked
        → index.html      totals (beyond-accuracy figures too, where the windows carry
                          them), the three plots, the alerts in a table

:func:`write_report` is the entry point (the demo calls it at its end); ``seqstream report``
reads the topics (:func:`read_report_inputs`) or files (:func:`load_windows_jsonl`,
:func:`load_alerts_jsonl`) and calls it.

A window may be published more than once (the worker keys windows ``<kind>/<start>/p<part>``
and a re-published one replaces the earlier record) and once per input partition: the
latest record per key is kept and partitions are merged into one window per time range
(:func:`stream_app.windows.aggregation.merge_windows`).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from schemas.alert import Alert
from schemas.exceptions import SchemaError
from schemas.metrics import MetricsWindow
from stream_app.windows.aggregation import aggregate_beyond, aggregate_windows, merge_windows

#: row labels of the beyond-accuracy totals
_BEYOND_LABELS = {"novelty": "novelty", "arp": "ARP (training count)",
                  "aplt": "long-tail share", "ild": "ILD (categories)"}

PNG_DPI = 100
FIG_SIZE = (8.0, 3.4)


@dataclass
class Loaded:
    """Records read from a file or a topic, and what could not be read."""

    records: list = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, where: str, why: str) -> None:
        self.rejected += 1
        if len(self.reasons) < 5:
            self.reasons.append(f"{where}: {why}")


# --------------------------------------------------------------------------- inputs
def latest_per_key(pairs: Iterable[tuple[bytes | str | None, MetricsWindow]]
                   ) -> list[MetricsWindow]:
    """Keep the latest window per key (unkeyed windows are all kept), in first-seen order;
    latest by emission time, as :func:`stream_app.windows.persistence.latest_windows`."""
    latest: dict[bytes | str, MetricsWindow] = {}
    out: list[tuple[bytes | str | None, MetricsWindow]] = []
    for key, w in pairs:
        if key is None:
            out.append((None, w))
        else:
            if key not in latest:
                out.append((key, w))
            if key not in latest or w.emitted_at_ms >= latest[key].emitted_at_ms:
                latest[key] = w
    return [latest[k] if k is not None else w for k, w in out]


def load_windows_jsonl(path: str | Path) -> Loaded:
    """A saved metrics topic: one MetricsWindow JSON per line; an optional ``key`` field
    (the Kafka key) lets a re-published window replace the earlier one. Bad lines are
    counted, not fatal."""
    res = Loaded()
    pairs = []
    with Path(path).open("rb") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                d = orjson.loads(line)
                if not isinstance(d, dict):
                    raise SchemaError("not a JSON object")
                w = MetricsWindow.from_json(line)
                if not isinstance(w.window_start_ms, int) or not isinstance(w.metrics, dict):
                    raise SchemaError("window_start_ms / metrics of the wrong type")
            except (orjson.JSONDecodeError, SchemaError) as e:
                res.reject(f"{path}:{n}", str(e))
                continue
            pairs.append((d.get("key"), w))
    res.records = latest_per_key(pairs)
    return res


def load_alerts_jsonl(path: str | Path) -> Loaded:
    res = Loaded()
    with Path(path).open("rb") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                res.records.append(Alert.from_json(line))
            except SchemaError as e:
                res.reject(f"{path}:{n}", str(e))
    return res


def save_windows_jsonl(pairs: Iterable[tuple[bytes | None, MetricsWindow]],
                       path: str | Path) -> int:
    """Write windows (with their Kafka key, if any) in the format of load_windows_jsonl."""
    n = 0
    with Path(path).open("wb") as f:
        for key, w in pairs:
            d = orjson.loads(w.to_json())
            if key is not None:
                d["key"] = key.decode() if isinstance(key, bytes) else key
            f.write(orjson.dumps(d) + b"\n")
            n += 1
    return n


def decode_messages(messages: Iterable, cls) -> tuple[list[tuple[bytes | None, object]], Loaded]:
    """Kafka messages (``.key``, ``.value``) -> (key, record) pairs; bad values counted."""
    res = Loaded()
    pairs = []
    for m in messages:
        try:
            pairs.append((m.key, cls.from_json(m.value)))
        except SchemaError as e:
            res.reject(f"{getattr(m, 'topic', '?')}@{getattr(m, 'offset', '?')}", str(e))
    return pairs, res


def read_report_inputs(settings, idle_s: float = 2.0, timeout_s: float = 60.0):
    """(window pairs, alerts, rejected count) read from the metrics and alerts topics."""
    from stream_app.kafka.topics import read_topic

    wpairs, wres = decode_messages(read_topic(settings, "metrics", idle_s=idle_s,
                                              timeout_s=timeout_s), MetricsWindow)
    apairs, ares = decode_messages(read_topic(settings, "alerts", idle_s=idle_s,
                                              timeout_s=timeout_s), Alert)
    return wpairs, [a for _, a in apairs], wres.rejected + ares.rejected


# --------------------------------------------------------------------------- plots
def _times(ms: Sequence[int]):
    return [dt.datetime.fromtimestamp(t / 1000, tz=dt.timezone.utc) for t in ms]


def _mark_alerts(ax, alerts: Sequence[Alert], metrics: Iterable[str] | None) -> int:
    """Vertical lines at the detection time of the alerts on ``metrics`` (None = all)."""
    wanted = None if metrics is None else set(metrics)
    n = 0
    for a in alerts:
        if wanted is not None and a.metric not in wanted:
            continue
        color = "#c0392b" if a.severity in ("warning", "critical") else "#7f8c8d"
        t = _times([a.window_end_ms])[0]
        ax.axvline(t, color=color, linestyle="--", linewidth=1.1, alpha=0.9,
                   label="alert" if n == 0 else None)
        arrow = {"down": "\u2193", "up": "\u2191"}.get(a.direction, "")
        ax.annotate(f" {a.metric} {arrow}", xy=(t, 0.98), xycoords=("data", "axes fraction"),
                    fontsize=7, color=color, rotation=90, va="top", ha="right")
        n += 1
    return n


def _style(ax, title: str, ylabel: str) -> None:
    import matplotlib.dates as mdates

    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.legend(fontsize=7, loc="best", ncol=4, frameon=False)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)


def _plot_quality(ws: Sequence[MetricsWindow], alerts: Sequence[Alert], path: Path) -> None:
    import matplotlib.pyplot as plt

    scored = [w for w in ws if w.scored]
    t = _times([w.window_end_ms for w in scored])
    ks = sorted({int(k.split("@")[1]) for w in scored for k in w.metrics if "@" in k})
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    colors = {"hr": "#1f77b4", "ndcg": "#2ca02c", "mrr": "#ff7f0e"}
    styles = ["-", ":", "-."]
    for j, k in enumerate(ks[:3]):
        for m in ("hr", "ndcg", "mrr"):
            key = f"{m}@{k}"
            ax.plot(t, [w.metrics.get(key, float("nan")) for w in scored],
                    styles[j % len(styles)], color=colors[m], linewidth=1.2,
                    label=f"{'HR' if m == 'hr' else m.upper()}@{k}")
    _mark_alerts(ax, alerts, [a.metric for a in alerts if a.metric.startswith("hit@")])
    ax.set_ylim(0, 1)
    _style(ax, "Online ranking quality per window (prequential)", "")
    _save(fig, path)


def _plot_latency(ws: Sequence[MetricsWindow], alerts: Sequence[Alert], path: Path) -> None:
    import matplotlib.pyplot as plt

    lw = [w for w in ws if w.latency_p50_ms is not None]
    t = _times([w.window_end_ms for w in lw])
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    for attr, label, color in (("latency_p50_ms", "p50", "#2ca02c"),
                               ("latency_p95_ms", "p95", "#ff7f0e"),
                               ("latency_p99_ms", "p99", "#d62728")):
        ax.plot(t, [getattr(w, attr) for w in lw], color=color, linewidth=1.2, label=label)
    _mark_alerts(ax, alerts, ("latency_ms", "latency_p99_ms"))
    if lw and max(w.latency_p99_ms or 0 for w in lw) > 50 * max(
            min(w.latency_p50_ms or 0 for w in lw), 1e-3):
        ax.set_yscale("log")
    _style(ax, "End-to-end latency per window (Kafka timestamp to prediction)", "ms")
    _save(fig, path)


def _plot_throughput(ws: Sequence[MetricsWindow], alerts: Sequence[Alert], path: Path) -> None:
    import matplotlib.pyplot as plt

    t = _times([w.window_end_ms for w in ws])
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    ax.plot(t, [w.events_per_s for w in ws], color="#1f77b4", linewidth=1.2,
            label="events/s (processing)")
    ax.set_ylim(bottom=0, top=max([w.events_per_s for w in ws] + [1.0]) * 1.15)
    _mark_alerts(ax, alerts, ("dead_letter_rate",))
    ax2 = ax.twinx()
    ax2.bar(t, [w.dead_letters for w in ws], width=_bar_width(ws), color="#d62728",
            alpha=0.5, label="dead letters")
    ax2.set_ylabel("dead letters", fontsize=9)
    ax2.tick_params(labelsize=8)
    top = max([w.dead_letters for w in ws] + [1])
    ax2.set_ylim(0, top * 3)  # keep the bars in the lower third
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    _style(ax, "Throughput and dead letters per window", "events/s")
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", ncol=3, frameon=False)
    _save(fig, path)


def _bar_width(ws: Sequence[MetricsWindow]) -> float:
    if not ws:
        return 0.001
    span_ms = min(w.window_end_ms - w.window_start_ms for w in ws)
    return 0.8 * span_ms / 86_400_000  # matplotlib dates: days


# --------------------------------------------------------------------------- report
def write_report(windows: Iterable[MetricsWindow], alerts: Iterable[Alert],
                 out_dir: str | Path, kind: str = "tumbling",
                 title: str = "seqstream online evaluation") -> Path:
    """Write ``quality.png``, ``latency.png``, ``throughput.png`` and ``index.html`` into
    ``out_dir`` (created) and return the path of ``index.html``.

    ``windows``: MetricsWindow records as published (per partition and possibly repeated
    after a restart: pass them through :func:`latest_per_key` first when keys are at hand);
    those of ``kind`` are merged per time range and plotted. ``alerts`` (:class:`Alert`) are
    marked on the plots and listed. Both also accept dicts or JSON bytes of the records;
    unreadable ones are left out.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = [w for w in _coerce(windows, MetricsWindow) if w.window_kind == kind]
    ws = merge_windows(raw)
    ws.sort(key=lambda w: w.window_start_ms)
    al = sorted(_coerce(alerts, Alert), key=lambda a: a.window_end_ms)
    pngs = {"quality.png": _plot_quality, "latency.png": _plot_latency,
            "throughput.png": _plot_throughput}
    for name, fn in pngs.items():
        fn(ws, al, out / name)
    index = out / "index.html"
    index.write_text(_html(ws, al, list(pngs), title, kind, raw), encoding="utf-8")
    return index


def _coerce(records: Iterable, cls) -> list:
    """Records as ``cls``: instances pass, dicts and JSON bytes/str are decoded; records
    that cannot be read are left out (never a crash in a report)."""
    out = []
    for r in records:
        if isinstance(r, cls):
            out.append(r)
            continue
        try:
            out.append(cls.from_json(orjson.dumps(r) if isinstance(r, dict) else r))
        except (SchemaError, TypeError):
            continue
    return out


def _fmt_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def _beyond_rows(ws: Sequence[MetricsWindow], raw: Sequence[MetricsWindow],
                 kind: str) -> list[tuple[str, str]]:
    """Beyond-accuracy totals over the merged windows ``ws`` (exact means,
    ``aggregate_beyond``) and the range of the exposure Gini of the windows as published
    (``raw``, per partition: a Gini is neither a mean nor merged)."""
    rows = []
    for key, v in aggregate_beyond(ws, kind=kind).items():
        name, k = key.split("@")
        rows.append((f"{_BEYOND_LABELS.get(name, name)} @{k}", f"{v:.4f}"))
    ks = sorted({int(key.split("@")[1]) for w in raw for key in w.beyond
                 if key.startswith("gini@")})
    for k in ks:
        g = [w.beyond[f"gini@{k}"] for w in sorted(raw, key=lambda w: w.window_end_ms)
             if f"gini@{k}" in w.beyond]
        rows.append((f"exposure Gini @{k}", f"{min(g):.4f} – {max(g):.4f} over {len(g)} "
                     f"windows (newest {g[-1]:.4f})"))
    return rows


def _html(ws: Sequence[MetricsWindow], alerts: Sequence[Alert], pngs: list[str], title: str,
          kind: str, raw: Sequence[MetricsWindow] = ()) -> str:
    e = html.escape
    total = aggregate_windows(ws, kind=kind)
    events = sum(w.events for w in ws)
    dead = sum(w.dead_letters for w in ws)
    late = sum(w.late_events for w in ws)
    versions = sorted({v for w in ws for v in w.model_version.split(",") if v})
    rows = [("windows", f"{len(ws)} {kind}"),
            ("event time", f"{_fmt_ms(ws[0].window_start_ms)} – {_fmt_ms(ws[-1].window_end_ms)}"
             " UTC" if ws else "–"),
            ("events", f"{events:,} ({sum(w.scored for w in ws):,} scored, {late:,} late)"),
            ("dead letters", f"{dead:,} ({dead / (events + dead):.2%})" if events + dead
             else "0"),
            ("model", ", ".join(versions) or "–")]
    rows += [(k.upper() if k.startswith(("hr", "mrr")) else k.replace("ndcg", "NDCG"),
              f"{v:.4f}") for k, v in total.items()]
    rows += _beyond_rows(ws, raw, kind)
    summary = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    figs = "\n".join(f'<figure><img src="{e(p)}" alt="{e(p[:-4])}"></figure>' for p in pngs)
    if alerts:
        arows = "\n".join(
            f"<tr><td>{e(_fmt_ms(a.window_end_ms))}</td><td>{e(a.severity)}</td>"
            f"<td>{e(a.metric)}</td><td>{e(a.detector)}</td>"
            f"<td>{'' if a.old_level is None else f'{a.old_level:.4g}'} → {a.new_level:.4g}</td>"
            f"<td>{e(a.message)}</td></tr>" for a in alerts)
        alert_html = ("<table><tr><th>detected (event time, UTC)</th><th>severity</th>"
                      "<th>metric</th><th>detector</th><th>level</th><th>message</th></tr>\n"
                      f"{arows}</table>")
    else:
        alert_html = "<p>No alerts.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 980px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{e(title)}</h1>
<p>Totals over all {e(kind)} windows (ranking metrics are means over scored events, equal to
the prequential evaluation of the same events; novelty, ARP, long-tail share and ILD are the
figures of all the windows' top-K lists; exposure Gini is per window and input partition, not
merged). Dashed red lines on the plots mark alerts.</p>
<table>
{summary}
</table>
{figs}
<h2>Alerts ({len(alerts)})</h2>
{alert_html}
</body></html>
"""


__all__ = ["Loaded", "decode_messages", "latest_per_key", "load_alerts_jsonl",
           "load_windows_jsonl", "read_report_inputs", "save_windows_jsonl", "write_report"]
