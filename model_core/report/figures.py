"""The report's plots (matplotlib's object API with the Agg canvas: no pyplot state, no
display): accuracy against catalogue coverage and against popularity (ARP), and per-segment
bars with their 95 % bootstrap intervals as whiskers.

:func:`main_figure` draws one row per setting (the README's image); :func:`segment_figure`
one panel per segmentation (history length, target popularity, target action). Model names
are drawn as plain text (``text.parse_math`` off: a ``$`` in a name is not TeX).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from model_core.report.results import ModelResult, Setting
from schemas.actions import ACTIONS

DPI = 100
MARKERS = "osD^vPX*<>hp"
POPULARITY_ORDER = ("head", "mid", "tail", "unseen")
SEGMENT_TITLES = {"history": "history length (events before the target)",
                  "popularity": "target popularity (thirds of training interactions)",
                  "action": "target action"}


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


def _rc():
    import matplotlib

    return matplotlib.rc_context({"text.parse_math": False, "font.size": 9})


def _figure(width: float, height: float, layout: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _style(i: int) -> dict[str, Any]:
    import matplotlib

    colours = matplotlib.colormaps["tab10" if i < 10 else "tab20"].colors
    return {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}


def _value(m: ModelResult, name: str) -> float | None:
    v = m.result["metrics"].get(name)
    return float(v) if isinstance(v, (int, float)) else None


def _whisker(m: ModelResult, name: str, v: float) -> tuple[float, float]:
    lo, hi = (m.result.get("ci") or {}).get(name) or (None, None)
    return (v - lo if lo is not None else 0.0, hi - v if hi is not None else 0.0)


def scatter_points(setting: Setting, x_of) -> list[tuple[int, ModelResult, float, float,
                                                          tuple[float, float]]]:
    """(model index, model, x, HR@K, (CI below, CI above)) for every model with both
    figures; ``x_of(model)`` gives x or None."""
    name = f"hr@{setting.k}"
    out = []
    for i, m in enumerate(setting.models):
        x, y = x_of(m), _value(m, name)
        if x is not None and y is not None:
            out.append((i, m, x, y, _whisker(m, name, y)))
    return out


def _scatter(ax, setting: Setting, x_of, xlabel: str) -> None:
    pts = scatter_points(setting, x_of)
    for i, _m, x, y, (below, above) in pts:
        st = _style(i)
        ax.errorbar([x], [y], yerr=[[below], [above]], fmt=st["marker"], color=st["color"],
                    ms=6, capsize=3, lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"HR@{setting.k} (95% CI)")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "not in these results", ha="center", va="center",
                transform=ax.transAxes, color="grey")


def coverage_of(m: ModelResult) -> float | None:
    v = m.result.get("coverage")
    return float(v) if isinstance(v, (int, float)) else None


def coverage_label(setting: Setting) -> str:
    tops = sorted({max(m.result["ks"]) for m in setting.models})
    return f"catalogue coverage (top-{'/'.join(map(str, tops))} lists)"


def segment_order(kind: str, labels: Sequence[str]) -> list[str]:
    """Buckets in reading order: popularity head → unseen, history by length, actions in the
    funnel's order (view → purchase), else by name."""
    order = {"popularity": POPULARITY_ORDER, "action": ACTIONS}.get(kind)
    if order is not None:
        return [b for b in order if b in labels] + sorted(b for b in labels if b not in order)

    def lead(b: str) -> tuple[int, str]:
        digits = "".join(c for c in b.split("-")[0] if c.isdigit())
        return (int(digits) if digits else 10**9, b)

    return sorted(labels, key=lead) if kind == "history" else sorted(labels)


def segment_kinds(setting: Setting) -> list[str]:
    """The segmentations of the setting's results that split the cases (a log with one action
    has one action bucket: its bar would only repeat HR@K)."""
    buckets: dict[str, set[str]] = {}
    for m in setting.models:
        for kind, v in ((m.result.get("extra") or {}).get("segments") or {}).items():
            if isinstance(v, dict):
                buckets.setdefault(kind, set()).update(v)
    return [kind for kind, b in buckets.items() if len(b) > 1]


def _segment_bars(ax, setting: Setting, kind: str, metric: str = "hr") -> bool:
    """Grouped bars of ``metric@k`` per bucket, one bar per model, CI whiskers; False when no
    model has this segmentation."""
    rows = []
    for i, m in enumerate(setting.models):
        seg = (m.result.get("extra") or {}).get("segments") or {}
        if isinstance(seg.get(kind), dict):
            rows.append((i, seg[kind], f"{metric}@{seg.get('k')}"))
    if not rows:
        return False
    buckets = segment_order(kind, list({b for _, s, _ in rows for b in s}))
    width = 0.8 / len(rows)
    for j, (i, seg, name) in enumerate(rows):
        xs, ys, err = [], [], [[], []]
        for bi, b in enumerate(buckets):
            fig = (seg.get(b) or {}).get(name)
            if not isinstance(fig, dict) or fig.get("mean") is None:
                continue
            y = fig["mean"]
            xs.append(bi - 0.4 + width * (j + 0.5))
            ys.append(y)
            err[0].append(y - fig["ci_low"] if fig.get("ci_low") is not None else 0.0)
            err[1].append(fig["ci_high"] - y if fig.get("ci_high") is not None else 0.0)
        st = _style(i)
        ax.bar(xs, ys, width=width, color=st["color"], yerr=err, capsize=2,
               error_kw={"lw": 0.8})
    ns = []
    for b in buckets:
        n = next((s[b].get("n") for _, s, _ in rows if isinstance(s.get(b), dict)), None)
        ns.append(f"{b}\nn={n}" if n is not None else b)
    ax.set_xticks(range(len(buckets)), ns)
    names = sorted({name for *_, name in rows})
    ax.set_ylabel(f"{'/'.join(n.upper() for n in names)} (95% CI)")
    ax.set_title(SEGMENT_TITLES.get(kind, kind), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return True


def _legend(fig, setting: Setting) -> None:
    """The models' markers, right of the (sub)figure's panels (constrained layout)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", ms=7, **_style(i)) for i in range(len(setting.models))]
    fig.legend(handles, [m.label for m in setting.models], loc="outside right upper",
               fontsize=8, frameon=False)


def main_figure(settings: Sequence[Setting]):
    """One row per setting, titled with it: HR@K against coverage, against ARP@K, and HR@K
    per target popularity bucket (history length when popularity is absent)."""
    with _rc():
        fig = _figure(13.0, 3.6 * len(settings), layout="constrained")
        rows = fig.subfigures(len(settings), 1, squeeze=False)[:, 0]
        for sub, s in zip(rows, settings, strict=True):
            k = s.k
            sub.suptitle(s.title, x=0.01, ha="left", fontsize=10, fontweight="bold")
            row = sub.subplots(1, 3)
            _scatter(row[0], s, coverage_of, coverage_label(s))
            row[0].set_title("accuracy vs coverage", fontsize=9)
            _scatter(row[1], s, lambda m, k=k: _value(m, f"arp@{k}"),
                     f"ARP@{k} (mean training count of recommended items)")
            row[1].set_title("accuracy vs popularity", fontsize=9)
            kinds = segment_kinds(s)
            kind = "popularity" if "popularity" in kinds else (kinds[0] if kinds else None)
            if kind is None or not _segment_bars(row[2], s, kind):
                row[2].set_axis_off()
                row[2].text(0.5, 0.5, "no per-segment figures", ha="center",
                            transform=row[2].transAxes, color="grey")
            _legend(sub, s)
    return fig


def segment_figure(setting: Setting, metric: str = "hr"):
    """One panel per segmentation of ``setting`` (None when it has none)."""
    kinds = segment_kinds(setting)
    if not kinds:
        return None
    with _rc():
        fig = _figure(4.3 * len(kinds) + 1.5, 3.4, layout="constrained")
        axes = fig.subplots(1, len(kinds), squeeze=False)[0]
        for ax, kind in zip(axes, kinds, strict=True):
            _segment_bars(ax, setting, kind, metric)
        _legend(fig, setting)
    return fig
