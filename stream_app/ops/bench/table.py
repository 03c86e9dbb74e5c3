"""The benchmark's summary as text: one line per run while it goes, a Markdown table at the end."""

from __future__ import annotations


def line(r) -> str:
    """One run (:class:`~stream_app.ops.bench.runner.RunResult`) on one line."""
    lat = r.latency_ms or {}
    return (f"  {r.name:<18} {_fmt(r.events_per_s):>9} ev/s  p50 {_fmt(lat.get('p50'))} "
            f"p95 {_fmt(lat.get('p95'))} p99 {_fmt(lat.get('p99'))} ms"
            f"{'' if r.paced_rate is None else f' @ {r.paced_rate:.0f} ev/s'}"
            f"  rss {_fmt(r.peak_rss_mb)} MiB")


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def format_table(summary: dict) -> str:
    """A Markdown table of the runs and the ratios against their targets."""
    rows = ["| run | events/s | events/CPU-s | latency p50 / p95 / p99 ms (at half load) "
            "| half-load rate | peak RSS MiB | state bytes/user |",
            "|---|---:|---:|---|---:|---:|---:|"]
    for name, r in summary["runs"].items():
        lat = r.get("latency_ms") or {}
        rows.append(f"| {name} | {_fmt(r['events_per_s'])} | {_fmt(r.get('events_per_cpu_s'))} | "
                    f"{_fmt(lat.get('p50'))} / "
                    f"{_fmt(lat.get('p95'))} / {_fmt(lat.get('p99'))} | "
                    f"{_fmt(r.get('paced_rate'))} | {_fmt(r['peak_rss_mb'])} | "
                    f"{_fmt(r.get('state_bytes_per_user'))} |")
    rows += ["", "| ratio | measured | target | met |", "|---|---:|---:|---|"]
    for key, target in summary["targets"].items():
        v = summary.get(key)
        lower_is_better = key in ("latency_p99_ms_at_half_load", "state_bytes_per_user")
        met = None if v is None else (v <= target if lower_is_better else v >= target)
        rows.append(f"| {key} | {'-' if v is None else v} | {'≤' if lower_is_better else '≥'} "
                    f"{target} | {'-' if met is None else ('yes' if met else 'no')} |")
    if summary.get("ratio_machinery_vs_ceiling_take_batches") is not None:
        rows.append("| (beside it) ratio_machinery_vs_ceiling_take_batches | "
                    f"{summary['ratio_machinery_vs_ceiling_take_batches']} | | |")
    cr = summary.get("cpu_ratios") or {}
    rows += ["", "per CPU-second: " + ", ".join(f"{k} {v}" for k, v in cr.items())]
    return "\n".join(rows)
