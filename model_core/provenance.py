"""Where a figure came from: enough to reproduce any evaluation result.

:func:`provenance` records the code's commit (``git rev-parse HEAD`` of the checkout the
package runs from, with ``+dirty`` when it has uncommitted changes; the installed version when
it is no checkout), the SHA-256 of every data file read, the split, the seed and the full
configuration. ``evaluate --json`` and ``compare --json`` put it in their output.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``version X``."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"version {version('seqstream')}"
        except PackageNotFoundError:
            return "unknown"


def provenance(data_files: Sequence[str | Path], split: Mapping[str, Any] | str,
               seed: int | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"commit", "data_sha256": {path: hash}, "split", "seed", "config"}``."""
    return {
        "commit": code_commit(),
        "data_sha256": {str(p): file_sha256(p) for p in data_files if p},
        "split": dict(split) if isinstance(split, Mapping) else split,
        "seed": seed,
        "config": dict(config),
    }
