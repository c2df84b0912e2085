"""Per-device choices of the training and decoding code: the precision policy (what autocast
computes in, and whether the loss needs scaling), copies to a GPU that do not make the host
wait, and glibc's allocator on CPUs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """A training precision on a device: fp32 (no autocast), or bf16 / fp16 autocast.

    fp16 needs loss scaling (its exponent range loses small gradients), bf16 has fp32's range and
    does not. CPU autocast takes bf16 and fp16 too, so the policy runs (and is tested) on CPUs.
    """

    def __init__(self, name: str, device: torch.device | str):
        if name not in _DTYPES:
            raise ValueError(f"unknown precision {name!r}: expected one of {', '.join(PRECISIONS)}")
        self.name, self.device = name, torch.device(device)
        self.dtype: torch.dtype | None = _DTYPES[name]

    def autocast(self) -> AbstractContextManager:
        """The autocast context of this precision (a no-op for fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16; None for bf16 and fp32, which need none."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None

    def __repr__(self) -> str:
        return f"Precision({self.name!r}, {str(self.device)!r})"


def decoding_precision(device: torch.device | str) -> Precision:
    """What decoding and validation compute in: bf16 on CUDA, fp32 elsewhere."""
    return Precision("bf16" if torch.device(device).type == "cuda" else "fp32", device)


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes in on `device` when decoding (see decoding_precision)."""
    return decoding_precision(device).dtype


def autocast(device: torch.device | str) -> AbstractContextManager:
    """The decoding autocast context for `device` (see decoding_precision)."""
    return decoding_precision(device).autocast()


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """t moved to `device`; from host memory to a GPU through pinned memory, asynchronously.

    A plain .to() from the host synchronises the CUDA stream after the copy (torch's copy_ with
    non_blocking=False), so the host would wait for all the GPU work queued before it.
    """
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the OS.

    By default glibc serves blocks above ~128 KiB (a threshold that adapts up to 32 MiB) with
    mmap and unmaps them on free, so every training step's activations and gradients are page-
    faulted and zeroed by the kernel again. With the mmap threshold at its 32 MiB maximum and no
    trimming, the same heap memory is reused step after step. Measured +6-10% tokens/s before
    the chunked loss; with it, 0.98-1.05x in three runs of bench/train_kernels.py (within this
    machine's noise). Memory use stays at the training step's peak, which it reaches anyway.
    Returns False where the C library has no mallopt (not glibc): nothing changes there.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
