"""Which device runs the network, at which precision, and what counts as running out of memory."""

from __future__ import annotations

import contextlib

import torch

from ..errors import SegResMambaError

__all__ = ["autocast", "is_out_of_memory", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if PyTorch sees a GPU, else Apple MPS, else CPU; an explicit device
    that is not there is an error (a silent CPU fallback would hide a broken GPU setup)."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise SegResMambaError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SegResMambaError(
            "device cuda was asked for, but this PyTorch sees no CUDA GPU (CPU-only build or no "
            "driver); use --device cpu or install a CUDA build of PyTorch"
        )
    if kind == "mps" and not _mps_available():
        raise SegResMambaError("device mps was asked for, but Apple MPS is not available here")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 (or fp16 on GPUs without bf16) autocast on CUDA; full precision elsewhere, where
    half precision is slower or unsupported."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError and the RuntimeErrors other backends raise instead."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
