"""Cost as a metric: what a phase of work (training, evaluation) took in time and memory.

    with measure_phase() as train:
        model = fit(...)
    train.seconds, train.cpu_seconds, train.peak_rss_mib, train.method

What is measured, and what it covers:

- ``seconds``: wall time of the phase (``time.perf_counter``); on a shared machine it includes
  waiting for the CPU.
- ``cpu_seconds``: CPU time of the whole process during the phase, every thread
  (``time.process_time``), so a phase that uses several cores reads more than its wall time.
- ``peak_rss_mib``: the largest resident set of the **whole process** during the phase (MiB):
  Python objects, NumPy and PyTorch buffers, loaded libraries and the data read before the
  phase started (what the process already held counts, as it stays resident). On Linux the
  kernel's high-water mark is reset at the start of the phase (``/proc/self/clear_refs``
  ``5``) and read at its end (``VmHWM`` in ``/proc/self/status``): ``method`` is then
  ``"vmhwm"``. Where that reset is not possible (another OS, or a kernel that refuses it) the
  figure is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process's peak since it
  started, which can only be the same or larger (``method`` ``"ru_maxrss"``). GPU memory is
  not counted.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class PhaseCost:
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    peak_rss_mib: float = float("nan")
    method: str = ""

    def to_dict(self, prefix: str) -> dict[str, float | None]:
        """``{prefix_s, prefix_cpu_s, prefix_peak_rss_mib}``, rounded, NaN as None."""
        def r(v: float, nd: int) -> float | None:
            return round(v, nd) if v == v else None
        return {f"{prefix}_s": r(self.seconds, 3), f"{prefix}_cpu_s": r(self.cpu_seconds, 3),
                f"{prefix}_peak_rss_mib": r(self.peak_rss_mib, 1)}


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vmhwm_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ru_maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # B / KiB


@contextmanager
def measure_phase() -> Iterator[PhaseCost]:
    """Measure the ``with`` block (see the module docstring); the figures are filled in when
    the block ends, also when it raises."""
    cost = PhaseCost()
    reset = _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield cost
    finally:
        cost.seconds = time.perf_counter() - t0
        cost.cpu_seconds = time.process_time() - c0
        hwm = _vmhwm_mib() if reset else None
        if hwm is not None:
            cost.peak_rss_mib, cost.method = hwm, "vmhwm"
        else:
            cost.peak_rss_mib, cost.method = _ru_maxrss_mib(), "ru_maxrss"


def cost_record(train: PhaseCost | None, evaluation: PhaseCost, n_events: int,
                trained_here: bool) -> dict:
    """The ``cost`` object of an evaluation result: ``train_*`` (None when the model was
    loaded from a checkpoint; then ``load_*`` holds the loading), ``eval_*``,
    ``eval_events`` (the events the evaluation scored or streamed) and ``eval_events_per_s``,
    and ``peak_rss_method``."""
    out: dict = {"trained_here": trained_here}
    if train is not None:
        out.update(train.to_dict("train" if trained_here else "load"))
    if not trained_here or train is None:
        out.update({"train_s": None, "train_cpu_s": None, "train_peak_rss_mib": None})
    out.update(evaluation.to_dict("eval"))
    out["eval_events"] = int(n_events)
    out["eval_events_per_s"] = (round(n_events / evaluation.seconds, 1)
                                if evaluation.seconds > 0 else None)
    out["peak_rss_method"] = evaluation.method
    return out


__all__ = ["PhaseCost", "cost_record", "measure_phase"]
