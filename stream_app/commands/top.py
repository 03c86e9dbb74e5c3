"""``seqstream top``: a live terminal view of the latest metrics windows and alerts (rich).

Reads the ``metrics`` and ``alerts`` topics from the beginning (or ``--from-end``), keeps the
latest record per window key, merges the partitions' windows per time range, and redraws in
place every ``--refresh-s``. ``--once`` reads what is there, prints one frame and exits.

Beyond accuracy at the first K, where the windows carry it: a header line over all windows
(novelty, ARP, long-tail share, ILD: exact means, :func:`~stream_app.windows.aggregation.aggregate_beyond`)
and the newest exposure Gini (per input partition: a Gini is not merged); ILD, Gini (where a
time range has one partition's window) and novelty columns when the terminal is wide enough
(they are the first to go).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from stream_app.commands._common import (
    add_kafka_options,
    kafka_settings,
    positive_float,
    positive_int,
)
from stream_app.kafka.security import kafka_python_kwargs


def register(sub) -> None:
    p = sub.add_parser("top", help="live view of the latest metrics windows and alerts")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--rows", type=positive_int, default=15, help="windows shown (newest last)")
    p.add_argument("--kind", default="tumbling", choices=("tumbling", "hopping"))
    p.add_argument("--refresh-s", type=positive_float, default=1.0)
    p.add_argument("--from-end", action="store_true",
                   help="only records published from now on (default: the whole topics)")
    p.add_argument("--from-jsonl", dest="from_jsonl", default=None,
                   help="with --once: windows from a saved JSONL instead of Kafka")
    p.add_argument("--alerts-jsonl", dest="alerts_jsonl", default=None,
                   help="with --once: alerts from a JSONL")
    p.add_argument("--idle-s", type=positive_float, default=2.0,
                   help="--once: stop reading a topic after this long without a message")
    add_kafka_options(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- state + frame
class TopState:
    """The latest window per key and the latest alerts (bounded)."""

    def __init__(self, max_alerts: int = 200) -> None:
        self._windows: dict = {}
        self._unkeyed: list = []
        self.alerts: list = []
        self.max_alerts = max_alerts
        self.rejected = 0
        self.updated_at: float | None = None

    def add_window_message(self, key, value) -> None:
        from schemas.exceptions import SchemaError
        from schemas.metrics import MetricsWindow

        try:
            w = MetricsWindow.from_json(value)
        except SchemaError:
            self.rejected += 1
            return
        if key is None:
            self._unkeyed.append(w)
            del self._unkeyed[:-5000]
        else:
            self._windows[key] = w
        self.updated_at = time.time()

    def add_alert_message(self, value) -> None:
        from schemas.alert import Alert
        from schemas.exceptions import SchemaError

        try:
            self.alerts.append(Alert.from_json(value))
        except SchemaError:
            self.rejected += 1
            return
        del self.alerts[:-self.max_alerts]
        self.updated_at = time.time()

    def windows(self) -> list:
        return [*self._windows.values(), *self._unkeyed]


def _t(ms: int | None, date: bool = False) -> str:
    if ms is None:
        return "–"
    d = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return d.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _f(v, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _columns(ws: Sequence, ks: list[int], date: bool) -> list[tuple[str, int, list[str]]]:
    """(header, priority, cells) per column; lower priority numbers are kept first."""
    cols: list[tuple[str, int, list[str]]] = [
        ("window end" if not date else "window end (UTC)", 0,
         [_t(w.window_end_ms, date=date) for w in ws]),
        ("events", 1, [f"{w.events:,}" for w in ws]),
        ("scored", 3, [f"{w.scored:,}" for w in ws]),
        ("users", 8, [f"{w.users:,}" for w in ws]),
    ]
    for j, k in enumerate(ks):
        for m, prio in (("hr", 1), ("ndcg", 2), ("mrr", 4)):
            label = "NDCG" if m == "ndcg" else m.upper()
            cols.append((f"{label}@{k}", prio + 6 * j,
                         [_f(w.metrics.get(f"{m}@{k}")) for w in ws]))
    k = ks[0]
    for name, key, prio in (("ILD", "ild", 11), ("Gini", "gini", 12), ("nov", "novelty", 13)):
        if any(f"{key}@{k}" in w.beyond for w in ws):
            cols.append((f"{name}@{k}", prio, [_f(w.beyond.get(f"{key}@{k}")) for w in ws]))
    cols += [
        ("acc", 5, [_f(w.action_accuracy) for w in ws]),
        ("F1", 9, [_f(w.action_macro_f1) for w in ws]),
        ("cov", 9, [_f(w.coverage) for w in ws]),
        ("p50 ms", 7, [_f(w.latency_p50_ms, ",.0f") for w in ws]),
        ("p95 ms", 8, [_f(w.latency_p95_ms, ",.0f") for w in ws]),
        ("p99 ms", 3, [_f(w.latency_p99_ms, ",.0f") for w in ws]),
        ("ev/s", 4, [_f(w.events_per_s, ",.0f") for w in ws]),
        ("dead", 2, [f"{w.dead_letters:,}" + (f" ({w.dead_letter_rate:.1%})"
                                                if w.dead_letters else "") for w in ws]),
        ("late", 6, [f"{w.late_events:,}" for w in ws]),
        ("model", 10, [w.model_version[:24] for w in ws]),
    ]
    return cols


def _width(col: tuple[str, int, list[str]]) -> int:
    return max([len(col[0]), *map(len, col[2])])


def _fit(cols: list[tuple[str, int, list[str]]], width: int) -> list[tuple[str, int, list[str]]]:
    """The columns, in their order, that fit ``width`` (each costs its widest text plus a
    padding space and a separator space), taken by priority: a narrow terminal shows fewer
    columns, never squeezed values."""
    need = {c[0]: _width(c) + 2 for c in cols}
    kept: set[str] = set()
    used = 0
    for c in sorted(cols, key=lambda c: c[1]):
        if used + need[c[0]] <= width:
            kept.add(c[0])
            used += need[c[0]]
    return [c for c in cols if c[0] in kept]


def _beyond_line(ws: Sequence, raw: Sequence, k: int, kind: str) -> str:
    """``beyond@K: novelty .. ARP .. tail .. ILD ..  Gini .. (newest)`` (under 80 columns),
    or "" when the windows carry none. ``ws``: the merged windows; ``raw``: as published, per
    partition — a Gini is not merged, so the newest time range's partition windows give it
    (their range when there are several)."""
    from stream_app.windows.aggregation import aggregate_beyond

    total = aggregate_beyond(ws, kind=kind)
    parts = [f"{label} {format(total[f'{key}@{k}'], fmt)}"
             for label, key, fmt in (("novelty", "novelty", ".2f"), ("ARP", "arp", ",.0f"),
                                     ("tail", "aplt", ".3f"), ("ILD", "ild", ".3f"))
             if f"{key}@{k}" in total]
    key = f"gini@{k}"
    with_gini = [w for w in raw if w.window_kind == kind and key in w.beyond]
    if with_gini:
        end = max(w.window_end_ms for w in with_gini)
        g = sorted(w.beyond[key] for w in with_gini if w.window_end_ms == end)
        parts.append(f"Gini {g[0]:.3f} (newest)" if len(g) == 1 else
                     f"Gini {g[0]:.3f}-{g[-1]:.3f} (newest, {len(g)} parts)")
    return f"beyond@{k}: " + "  ".join(parts) if parts else ""


def render_frame(windows: Sequence, alerts: Sequence, kind: str = "tumbling", rows: int = 15,
                 source: str = "", rejected: int = 0, width: int = 80):
    """A rich renderable for a terminal ``width`` columns wide: header, the newest ``rows``
    windows (merged; the columns that fit, by importance), the latest alerts."""
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from stream_app.windows.aggregation import aggregate_windows, merge_windows

    ws = [w for w in merge_windows(windows) if w.window_kind == kind]
    ws.sort(key=lambda w: w.window_start_ms)
    total = aggregate_windows(ws, kind=kind)
    ks = sorted({int(k.split("@")[1]) for w in ws for k in w.metrics if "@" in k})[:2] or [10]
    head = Text()
    head.append("seqstream top", style="bold")
    if source:
        head.append(f"  {source}", style="dim")
    head.append(f"\n{len(ws)} {kind} windows, {sum(w.events for w in ws):,} events, "
                f"{sum(w.dead_letters for w in ws):,} dead letters, "
                f"{sum(w.late_events for w in ws):,} late")
    if ws:
        head.append(f"; {_t(ws[0].window_start_ms, date=True)} .. "
                    f"{_t(ws[-1].window_end_ms, date=True)} UTC")
    if total:
        head.append("\nall windows: " + "  ".join(
            f"{k.upper() if not k.startswith('ndcg') else 'NDCG' + k[4:]} {v:.4f}"
            for k, v in total.items() if k.endswith(f"@{ks[0]}")))
    beyond = _beyond_line(ws, windows, ks[0], kind)
    if beyond:
        head.append("\n" + beyond)
    if rejected:
        head.append(f"\n({rejected} unreadable records skipped)", style="yellow")

    shown = ws[-rows:]
    cols = _fit(_columns(shown, ks, date=width >= 140), width - 1)
    table = Table(expand=False, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1, 0, 0), show_edge=False)
    for col in cols:
        name = col[0]
        table.add_column(name, justify="left" if name == "model" or name.startswith("window")
                         else "right", no_wrap=True, min_width=_width(col))
    for i in range(len(shown)):
        table.add_row(*[c[2][i] for c in cols])
    if not ws:
        table.add_row(*(["no closed window yet"] + [""] * (len(table.columns) - 1)))

    lines = Text()
    for i, a in enumerate(alerts[-8:]):
        if i:
            lines.append("\n")
        style = {"critical": "bold red", "warning": "red", "info": "cyan"}.get(a.severity, "")
        lines.append(f"{_t(a.window_end_ms, date=True)}  {a.severity:<8} {a.metric:<16} ",
                     style=style)
        lines.append(a.message)
    if not alerts:
        lines.append("no alerts", style="dim")
    return Group(head, table, Panel(lines, title=f"alerts ({len(alerts)})", title_align="left"))


# --------------------------------------------------------------------------- reading
def _consumer(settings, topics: list[str], from_end: bool):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, **kafka_python_kwargs(settings))
    tps = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic) or set()
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    if tps:
        consumer.assign(tps)
        (consumer.seek_to_end if from_end else consumer.seek_to_beginning)(*tps)
    return consumer, tps


def run(args) -> int:
    from rich.console import Console

    console = Console()
    state = TopState()
    if args.once and args.from_jsonl:
        from stream_app.observe.report import load_alerts_jsonl, load_windows_jsonl

        loaded = load_windows_jsonl(args.from_jsonl)
        alerts = load_alerts_jsonl(args.alerts_jsonl).records if args.alerts_jsonl else []
        console.print(render_frame(loaded.records, alerts, args.kind, args.rows,
                                   source=args.from_jsonl, rejected=loaded.rejected,
                                   width=console.width))
        return 0
    settings = kafka_settings(args)
    t_metrics, t_alerts = settings.topic("metrics"), settings.topic("alerts")
    source = f"{settings.broker_url}  {t_metrics} + {t_alerts}"
    if args.once:
        from stream_app.kafka.topics import iter_topic

        for m in iter_topic(settings, "metrics", idle_s=args.idle_s, timeout_s=60):
            state.add_window_message(m.key, m.value)
        for m in iter_topic(settings, "alerts", idle_s=args.idle_s, timeout_s=60):
            state.add_alert_message(m.value)
        console.print(render_frame(state.windows(), state.alerts, args.kind, args.rows,
                                   source=source, rejected=state.rejected, width=console.width))
        return 0

    from rich.live import Live

    consumer, tps = _consumer(settings, [t_metrics, t_alerts], args.from_end)
    try:
        with Live(render_frame([], [], args.kind, args.rows, source=source,
                               width=console.width), console=console,
                  refresh_per_second=4, screen=False) as live:
            next_draw = 0.0
            while True:
                if not tps:  # topics not created yet: look again
                    consumer.close()
                    time.sleep(args.refresh_s)
                    consumer, tps = _consumer(settings, [t_metrics, t_alerts], args.from_end)
                    continue
                for tp, msgs in consumer.poll(timeout_ms=int(args.refresh_s * 500)).items():
                    for m in msgs:
                        if tp.topic == t_metrics:
                            state.add_window_message(m.key, m.value)
                        else:
                            state.add_alert_message(m.value)
                if time.monotonic() >= next_draw:
                    live.update(render_frame(state.windows(), state.alerts, args.kind,
                                             args.rows, source=source,
                                             rejected=state.rejected, width=console.width))
                    next_draw = time.monotonic() + args.refresh_s
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
