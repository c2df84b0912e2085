"""Per-device choices (job.device)."""

import platform

import torch

from job.device import autocast, autocast_dtype, keep_freed_memory


def test_fp32_on_cpu_bf16_on_cuda():
    assert autocast_dtype("cpu") is None and autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype("cuda") == autocast_dtype(torch.device("cuda", 1)) == torch.bfloat16


def test_autocast_changes_nothing_on_cpu():
    with autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
    assert y.dtype == torch.float32


def test_keep_freed_memory_on_glibc():
    assert keep_freed_memory() == (platform.libc_ver()[0] == "glibc")
