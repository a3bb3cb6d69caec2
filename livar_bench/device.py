"""The compute device: choosing it, its autocast dtype, synchronising it, and its peak memory.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set size on
CPU (``resource.getrusage``); the two are different quantities and get different metric names.
"""

from __future__ import annotations

import sys

import torch

from livar_bench.errors import BenchError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a clear error otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run's ``precision`` (auto = bf16 on CUDA, full fp32 elsewhere); None = fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so that a wall-clock reading covers it); no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh CUDA peak-memory window (no-op on CPU: the process RSS peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """``{"peak_cuda_mem_bytes": ...}`` on CUDA, else ``{"peak_host_rss_bytes": ...}`` (process-wide peak)."""
    if device.type == "cuda":
        return {"peak_cuda_mem_bytes": float(torch.cuda.max_memory_allocated(device))}
    try:
        import resource
    except ImportError:  # Windows has no resource module; report nothing rather than a wrong number
        return {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return {"peak_host_rss_bytes": float(peak if sys.platform == "darwin" else peak * 1024)}
