"""Per-device choices (job.model.device)."""

import platform

import pytest
import torch

from job.model.device import (
    PRECISIONS,
    Precision,
    autocast,
    autocast_dtype,
    keep_freed_memory,
    to_device,
)


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


@pytest.mark.parametrize(
    ("name", "dtype"), [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_precision_autocast_dtype(name, dtype):
    p = Precision(name, "cpu")
    assert name in PRECISIONS and p.dtype == dtype
    with p.autocast():
        y = torch.ones(2, 2) @ torch.ones(2, 2)
        assert torch.is_autocast_enabled("cpu") == (dtype is not None)
    assert y.dtype == (dtype or torch.float32)


def test_only_fp16_gets_a_grad_scaler():
    assert isinstance(Precision("fp16", "cpu").grad_scaler(), torch.amp.GradScaler)
    assert Precision("bf16", "cpu").grad_scaler() is None
    assert Precision("fp32", torch.device("cpu")).grad_scaler() is None


def test_unknown_precision_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown precision 'fp8'") as err:
        Precision("fp8", "cpu")
    assert "\n" not in str(err.value)


def test_to_device_off_cuda_is_a_plain_copy():
    t = torch.arange(3)
    assert to_device(t, "cpu") is t
    moved = to_device(t, "meta")
    assert moved.device.type == "meta" and moved.shape == t.shape
