"""Where models run: ``auto`` picks CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from vaescope.errors import InputError


def mps_available() -> bool:
    """Whether Apple's Metal backend is usable (never on Linux; guarded for old torch builds)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(requested: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when there is a GPU, else MPS on Apple silicon, else CPU; ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` and ``"mps"`` as asked. Asking for a backend this machine lacks raises
    InputError saying what is there.

    Examples:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {requested!r} was asked for but no CUDA GPU is available; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {requested!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not mps_available():
        raise InputError(f"device {requested!r} was asked for but Apple's MPS backend is not available; use cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {requested!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device
