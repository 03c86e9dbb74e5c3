"""One self-contained HTML page comparing offline evaluation results.

    seqstream report yoochoose.json beauty.json --out report.html --png docs/images/x.png

Per setting (the same data files, protocol and history exclusion,
:func:`~model_core.report.results.group_settings`):
a table of models at the largest common cut-off K (HR/NDCG/MRR with 95 % intervals, catalogue
coverage, novelty, ARP, long-tail share, Gini, ILD and the repeat/new split when the results
carry them), the ``cost`` object's numbers, every metric at every K, the plots of
:mod:`model_core.report.figures` (embedded as base64 PNG: the page needs no network and no
other file), the paired tests with their adjusted p-values (and a prequential compare's
sliding-window test), per-segment figures with intervals and, per result file, its
provenance (commit, data hashes, split, seed, config). Every string from a file is
HTML-escaped. A p-value of 0 from the bootstrap is written as its bound
(:func:`model_core.significance.p_value_text`); an adjusted one as its bound times the family
size (Holm and Benjamini–Hochberg never multiply a p-value by more).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_core.report.figures import (
    main_figure,
    png_bytes,
    segment_figure,
    segment_kinds,
    segment_order,
)
from model_core.report.results import (
    ModelResult,
    PairedTests,
    ReportInputError,
    Setting,
    group_settings,
    load_result_file,
)
from model_core.significance import p_value_text

ACCURACY = ("hr", "ndcg", "mrr")
# beyond-accuracy metrics at K: (metrics key prefix, column head, format, what it is)
BEYOND = (("novelty", "novelty", ".2f", "mean self-information of recommended items, bits"),
          ("arp", "ARP", ".1f", "average recommendation popularity (training count)"),
          ("aplt", "long tail", ".3f", "share of recommended items outside the top 20 %"),
          ("gini", "Gini", ".3f", "Gini of exposure over the catalogue"),
          ("ild", "ILD", ".3f", "intra-list diversity by category"))
METRIC_ORDER = ("hr", "ndcg", "mrr", "novelty", "arp", "aplt", "gini", "ild")

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;
padding:0 1em;color:#222}h1{font-size:1.5em}h2{font-size:1.25em;margin-top:2em;
border-bottom:1px solid #ccc}h3{font-size:1.05em}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}small{color:#666}img{max-width:100%}
.best{font-weight:bold}pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:12px}
p.note{color:#555}"""


@dataclass(frozen=True)
class ReportSummary:
    html_path: str
    png_path: str | None
    settings: list[tuple[str, int]]  # (title, models)


def e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any, spec: str = ".4f") -> str:
    return format(v, spec) if _is_number(v) else "–"


def _with_ci(m: ModelResult, name: str, spec: str = ".4f") -> str:
    v = m.result["metrics"].get(name)
    lo, hi = (m.result.get("ci") or {}).get(name) or (None, None)
    ci = f"<br><small>[{_fmt(lo, spec)}, {_fmt(hi, spec)}]</small>" if lo is not None else ""
    return _fmt(v, spec) + ci


def _img(fig, alt: str) -> str:
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return f'<p><img alt="{e(alt)}" src="data:image/png;base64,{data}"></p>'


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cost_keys(models: Sequence[ModelResult]) -> list[str]:
    """The numeric fields of the results' ``cost`` objects, in first-seen order."""
    keys: list[str] = []
    for m in models:
        cost = m.result.get("cost")
        if isinstance(cost, dict):
            keys += [k for k, v in cost.items() if _is_number(v) and k not in keys]
    return keys


def cost_table(s: Setting) -> str:
    """Models × the numbers of their ``cost`` (training, evaluation: seconds, CPU seconds,
    peak memory, events/s); empty when no result has one."""
    keys = _cost_keys(s.models)
    if not keys:
        return ""
    head = "<tr><th class=l>model</th>" + "".join(f"<th>{e(k)}</th>" for k in keys)
    rows = []
    for m in s.models:
        cost = m.result.get("cost") if isinstance(m.result.get("cost"), dict) else {}
        trained = cost.get("trained_here")
        rows.append(f"<tr><td class=l>{e(m.label)}"
                    + ("<br><small>loaded, not trained here</small>" if trained is False else "")
                    + "</td>" + "".join(f"<td>{_fmt(cost.get(k), '.4g')}</td>" for k in keys)
                    + "</tr>")
    return f"<h3>Cost</h3><table>{head}</tr>{''.join(rows)}</table>"


def summary_table(s: Setting) -> str:
    """Models × metrics at the setting's K; the best accuracy figure of a column in bold."""
    k = s.k
    beyond = [b for b in BEYOND if any(f"{b[0]}@{k}" in m.result["metrics"] for m in s.models)]
    repeat = any((m.result.get("extra") or {}).get("repeat") for m in s.models)
    head = ["<th class=l>model</th><th>test cases</th>"]
    head += [f"<th>{n.upper()}@{k}<br><small>95% CI</small></th>" for n in ACCURACY]
    tops = "/".join(str(t) for t in sorted({max(m.result["ks"]) for m in s.models}))
    head.append(f"<th title='distinct items in the top-K lists / catalogue'>coverage"
                f"<br><small>top-{tops}</small></th>")
    head += [f"<th title='{e(why)}'>{e(h)}@{k}</th>" for _, h, _, why in beyond]
    if repeat:
        head.append("<th title='HR on targets the case history holds / does not hold'>"
                    "HR repeat / new</th>")
    best = {n: max((m.result["metrics"].get(f"{n}@{k}") or 0.0) for m in s.models)
            for n in ACCURACY}
    rows = []
    for m in s.models:
        r = m.result
        cells = [f"<td class=l>{e(m.label)}</td><td>{e(r.get('n_test_cases'))}</td>"]
        for n in ACCURACY:
            v = r["metrics"].get(f"{n}@{k}")
            cls = " class=best" if v is not None and len(s.models) > 1 and v == best[n] else ""
            cells.append(f"<td{cls}>{_with_ci(m, f'{n}@{k}')}</td>")
        cells.append(f"<td>{_fmt(r.get('coverage'), '.3f')}</td>")
        cells += [f"<td>{_fmt(r['metrics'].get(f'{key}@{k}'), spec)}</td>"
                  for key, _, spec, _ in beyond]
        if repeat:
            rep = (r.get("extra") or {}).get("repeat") or {}
            cells.append(f"<td>{_fmt(rep.get('hr_repeat'))} / {_fmt(rep.get('hr_new'))}"
                         f"<br><small>@{e(rep.get('k', '–'))}, "
                         f"{_fmt(rep.get('repeat_case_share'), '.3f')} repeats</small></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{''.join(head)}</tr>{''.join(rows)}</table>"


def _metric_key(name: str) -> tuple:
    base, _, k = name.partition("@")
    order = METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER)
    return (order, base, int(k) if k.isdigit() else 0)


def all_metrics_table(s: Setting) -> str:
    """Every metric any model reports (rows) × models (columns), with the CI when given."""
    names = sorted({n for m in s.models for n in m.result["metrics"]}, key=_metric_key)
    head = "<tr><th class=l>metric</th>" + "".join(f"<th>{e(m.label)}</th>"
                                                   for m in s.models) + "</tr>"
    rows = [f"<tr><td class=l>{e(n)}</td>"
            + "".join(f"<td>{_with_ci(m, n, '.1f' if n.startswith('arp@') else '.4f')}</td>"
                      for m in s.models) + "</tr>" for n in names]
    return f"<table>{head}{''.join(rows)}</table>"


def segment_table(s: Setting) -> str:
    """Every segment bucket (rows) × models: HR and NDCG at the segments' K with intervals."""
    kinds = segment_kinds(s)
    if not kinds:
        return ""
    head = ("<tr><th class=l>segment</th><th>cases</th>"
            + "".join(f"<th>{e(m.label)}</th>" for m in s.models) + "</tr>")
    rows = []
    for kind in kinds:
        segs = [((m.result.get("extra") or {}).get("segments") or {}) for m in s.models]
        labels = segment_order(kind, list({b for g in segs for b in (g.get(kind) or {})}))
        for b in labels:
            n = next((g[kind][b].get("n") for g in segs if b in (g.get(kind) or {})), None)
            cells = []
            for g in segs:
                fig = (g.get(kind) or {}).get(b) or {}
                parts = [f"{name.split('@')[0].upper()} {_fmt(v.get('mean'))}"
                         f" <small>[{_fmt(v.get('ci_low'))}, {_fmt(v.get('ci_high'))}]</small>"
                         for name, v in fig.items() if isinstance(v, dict)]
                cells.append(f"<td>{'<br>'.join(parts) or '–'}</td>")
            rows.append(f"<tr><td class=l>{e(kind)}: {e(b)}</td><td>{e(n)}</td>"
                        + "".join(cells) + "</tr>")
    return ("<details><summary>per-segment figures (HR and NDCG at the segments' K)</summary>"
            f"<table>{head}{''.join(rows)}</table></details>")


def p_text(p: float | None, n_resamples: int | None, family: int = 1) -> str:
    """A p-value as :func:`p_value_text` writes it; a 0 adjusted over ``family`` tests is
    bounded by ``family`` times the bound of one (``n_resamples / family`` below)."""
    if p is None:
        return "n/a"
    if p <= 0.0 and not n_resamples:
        return "0 (no resample crossed zero)"
    n = n_resamples / max(family, 1) if p <= 0.0 and n_resamples else (n_resamples or 1)
    return p_value_text(p, n).removeprefix("p ").removeprefix("= ")


def paired_table(s: Setting, all_metrics: bool) -> str:
    k = s.k
    head = ("<tr><th class=l>A (reference)</th><th class=l>B</th><th class=l>metric</th>"
            "<th>cases</th><th>A</th><th>B</th><th>A − B<br><small>95% CI</small></th>"
            "<th title='paired Cohen d of the per-case A − B'>d</th><th>p</th>"
            "<th>adjusted p</th></tr>")
    rows = []
    for p in s.paired:
        for name, t in sorted(p.tests.items(), key=lambda kv: _metric_key(kv[0])):
            if not all_metrics and name not in {f"{n}@{k}" for n in ACCURACY}:
                continue
            rows.append(
                f"<tr><td class=l>{e(p.reference)}</td><td class=l>{e(p.model)}</td>"
                f"<td class=l>{e(name)}</td><td>{e(t.get('n', '–'))}</td>"
                f"<td>{_fmt(t['a'])}</td><td>{_fmt(t['b'])}</td>"
                f"<td>{_fmt(t['mean_diff'], '+.4f')}<br><small>[{_fmt(t['ci_low'], '+.4f')}, "
                f"{_fmt(t['ci_high'], '+.4f')}]</small></td>"
                f"<td>{_fmt(t.get('effect_size'), '+.2f')}</td>"
                f"<td>{e(p_text(t['p_value'], p.n_resamples))}</td>"
                f"<td>{e(p_text(t.get('p_adjusted'), p.n_resamples, p.family_size))}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def windows_table(s: Setting) -> str:
    """The sliding-window test of prequential runs (per-window means paired over the
    stream's event-time windows), where the results carry it."""
    rows = []
    for p in s.paired:
        for name, t in sorted(p.windows.items(), key=lambda kv: _metric_key(kv[0])):
            rows.append(
                f"<tr><td class=l>{e(p.reference)}</td><td class=l>{e(p.model)}</td>"
                f"<td class=l>{e(name)}</td><td>{e(int(t['windows']))}</td>"
                f"<td>{e(t.get('windows_a_better', '–'))} / "
                f"{e(t.get('windows_b_better', '–'))}</td>"
                f"<td>{_fmt(t['mean_diff'], '+.4f')}<br><small>[{_fmt(t['ci_low'], '+.4f')}, "
                f"{_fmt(t['ci_high'], '+.4f')}]</small></td>"
                f"<td>{e(p_text(t['p_value'], p.n_resamples))}</td>"
                f"<td>{e(p_text(t.get('p_adjusted'), p.n_resamples, p.windows_family))}</td>"
                "</tr>")
    if not rows:
        return ""
    head = ("<tr><th class=l>A (reference)</th><th class=l>B</th><th class=l>metric</th>"
            "<th>windows</th><th>A better / B better</th><th>A − B<br><small>95% CI</small>"
            "</th><th>p</th><th>adjusted p</th></tr>")
    return ("<h3>Sliding-window test (prequential)</h3><p class=note>Per-window means of A and "
            "B paired over the stream's windows (Vinagre et al.); adjusted p: Holm over the "
            "file's window tests.</p>"
            f"<table>{head}{''.join(rows)}</table>")


def _resolution_note(paired: Sequence[PairedTests]) -> str:
    """Where a test no resample crossed cannot be adjusted below 0.05: how many resamples
    would resolve it (the bound is family × 2 / resamples)."""
    worst = max(paired, key=lambda p: p.family_size / (p.n_resamples or 1))
    if not worst.n_resamples or 2 * worst.family_size / worst.n_resamples < 0.05:
        return ""
    need = int(2 * worst.family_size / 0.05) + 1
    return (f" A test no resample crossed is adjusted to at most {worst.family_size} × "
            f"2/{worst.n_resamples}; --bootstrap {need} or more resolves such a test below "
            "0.05.")


def provenance_table(s: Setting) -> str:
    rows = []
    for f in s.sources:
        pv = f.provenance or {}
        models = ", ".join(m.label for m in s.models if m.source == f.source)
        data = "<br>".join(f"{e(Path(str(p)).name)}: <code>{e(h)}</code>"
                           for p, h in (pv.get("data_sha256") or {}).items()) or "–"
        split = pv.get("split")
        split_text = (", ".join(f"{k}={v}" for k, v in split.items())
                      if isinstance(split, dict) else split)
        config = json.dumps(pv.get("config"), indent=1, sort_keys=True, default=str)
        rows.append(
            f"<tr><td class=l>{e(f.source)}</td><td class=l>{e(models)}</td>"
            f"<td class=l><code>{e(pv.get('commit', 'not recorded'))}</code></td>"
            f"<td class=l>{data}</td><td class=l>{e(split_text if split_text else '–')}</td>"
            f"<td>{e(pv.get('seed', '–'))}</td>"
            f"<td class=l><details><summary>config</summary><pre>{e(config)}</pre>"
            "</details></td></tr>")
    head = ("<tr><th class=l>result file</th><th class=l>models</th><th class=l>commit</th>"
            "<th class=l>data SHA-256</th><th class=l>split</th><th>seed</th>"
            "<th class=l>config</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _protocol_note(s: Setting) -> str:
    r = s.models[0].result
    parts = [f"protocol {e(s.protocol)}", f"ties {e(r.get('ties', '–'))}",
             "history excluded" if r.get("exclude_history") else "history not excluded"]
    unknown = {m.label: m.result.get("n_unknown_target_as_miss") for m in s.models}
    if any(unknown.values()):
        parts.append("targets unknown to the model counted as misses: " + ", ".join(
            f"{e(lb)} {e(n)}" for lb, n in unknown.items() if n))
    return f"<p class=note>{'; '.join(parts)}.</p>"


def setting_section(s: Setting, index: int) -> str:
    k = s.k
    out = [f"<h2 id=s{index}>{e(s.title)}</h2>", _protocol_note(s),
           f"<h3>Models at K = {k}</h3>", summary_table(s), cost_table(s),
           "<h3>Accuracy against coverage and popularity; per target popularity</h3>",
           _img(main_figure([s]), f"{s.title}: accuracy against coverage and popularity")]
    seg = segment_figure(s)
    if seg is not None:
        out += [f"<h3>Per segment: HR@{k} with 95% intervals</h3>",
                _img(seg, f"{s.title}: per-segment HR"), segment_table(s)]
    out.append("<h3>Paired tests</h3>")
    if s.paired:
        adj = sorted({p.adjustment for p in s.paired})
        out += [f"<p class=note>A − B on the cases both ranked (paired bootstrap); adjusted "
                f"p: {e('; '.join(adj))}.{_resolution_note(s.paired)}</p>",
                paired_table(s, all_metrics=False),
                "<details><summary>every metric and cut-off</summary>",
                paired_table(s, all_metrics=True), "</details>", windows_table(s)]
    else:
        out.append("<p class=note>None: these results come from separate evaluate runs. "
                   "<code>seqstream compare A B C ...</code> evaluates models on the same "
                   "cases and tests them pairwise.</p>")
    out += ["<h3>Every metric</h3>", all_metrics_table(s),
            "<h3>Provenance</h3>", provenance_table(s)]
    return "\n".join(out)


def build_page(settings: Sequence[Setting], title: str, generated: str) -> str:
    toc = "".join(f"<li><a href='#s{i}'>{e(s.title)}</a> ({len(s.models)} models)</li>"
                  for i, s in enumerate(settings))
    body = "\n".join(setting_section(s, i) for i, s in enumerate(settings))
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}"
            f"</title><style>{CSS}</style></head><body><h1>{e(title)}</h1>"
            f"<p class=note>Written {e(generated)} by <code>seqstream report</code>. Full "
            "ranking unless a result says otherwise; intervals are 95 % bootstrap intervals "
            f"over test sequences.</p><ul>{toc}</ul>\n{body}\n</body></html>\n")


def write_report(paths: Sequence[str | Path], out: str | Path, png: str | Path | None = None,
                 title: str = "seqstream model comparison",
                 generated: str = "") -> ReportSummary:
    """Read the result files, write the page (and the main figure as PNG); every input is
    checked before anything is written."""
    out = Path(out)
    if out.is_dir():
        raise ReportInputError(f"--out {out} is a directory; name the page, e.g. "
                               f"{out / 'report.html'}")
    settings = group_settings([load_result_file(p) for p in paths])
    for s in settings:
        _ = s.k  # no common cut-off: one line before anything is written
    page = build_page(settings, title, generated)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    if png is not None:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        Path(png).write_bytes(png_bytes(main_figure(settings)))
    return ReportSummary(str(out), str(png) if png is not None else None,
                         [(s.title, len(s.models)) for s in settings])
