"""Device selection: ``auto`` means CUDA when available, else CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> ``cuda`` if available else ``cpu``; ``cuda`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}; use auto, cpu, cuda or cuda:N") from None
