"""Process figures of a benchmark run: peak RSS, CPU seconds, latency percentiles."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from pathlib import Path

from model_core.metrics import percentiles


def percentiles_ms(values) -> dict[str, float | None]:
    """p50 / p95 / p99 of latencies in ms (:func:`model_core.metrics.percentiles`), to 0.1 ms."""
    p50, p95, p99 = percentiles(values, (50, 95, 99))
    return {name: None if v is None else round(v, 1)
            for name, v in (("p50", p50), ("p95", p95), ("p99", p99))}


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, in MiB (Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a live process has used (Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def self_peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / 1024 / (1024 if sys.platform == "darwin" else 1), 1)
