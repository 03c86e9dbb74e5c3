"""The per-window plot of a learning comparison (:func:`model_core.learn.compare_learning`).

    plot_windows(report, "docs/online_learning.png")

One panel per metric at the largest K (HR, NDCG, MRR), one line per run (frozen, periodic
retraining when measured, online) over the report's windows of consecutive scored events,
so a drift or a new item's arrival shows as the windows where the lines part. matplotlib
(Agg backend, no display) is imported only here.
"""

from __future__ import annotations

from pathlib import Path

#: Runs in drawing order, with their line styles.
_STYLES = {"frozen": ("tab:gray", "--"), "retrain": ("tab:orange", "-."),
           "online": ("tab:blue", "-")}


def plot_windows(report: dict, path: str | Path, title: str | None = None) -> Path:
    """Write the per-window PNG of ``report`` to ``path`` (folders made) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["ks"][-1]
    names = [f"hr@{k}", f"ndcg@{k}", f"mrr@{k}"]
    per = report["per_window"]
    fig, axes = plt.subplots(1, len(names), figsize=(10, 3.2), dpi=90, sharex=True)
    for ax, name in zip(axes, names, strict=True):
        for run, (color, style) in _STYLES.items():
            ys = per.get(run, {}).get(name)
            if ys:
                ax.plot(range(1, len(ys) + 1), ys, style, color=color, label=run, lw=1.6)
        ax.set_title(name.upper(), fontsize=10)
        ax.set_xlabel("window of scored events", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or f"{report.get('model', '')}: prequential, per window "
                 f"({report['n_scored']} scored events)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["plot_windows"]
