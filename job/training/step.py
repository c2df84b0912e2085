"""One optimizer step and what it needs: the learning-rate schedule, gradient accumulation over
micro-batches, the precision policy's autocast and loss scaling, the training counters that
checkpoints carry, the training clock and the loss window of metrics.jsonl. Plain PyTorch (no
Ray); job.training.worker drives it."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from job.config import TrainConfig
from job.metrics import improves
from job.model.batching import Batch, make_batch
from job.model.device import Precision


@dataclass
class TrainStats:
    """Training counters, saved in every checkpoint's state.json and restored on resume."""

    step: int = 0  # optimizer steps
    epoch: int = 0  # epochs completed
    elapsed_s: float = 0.0  # training time over all restarts
    src_tokens: int = 0
    tgt_tokens: int = 0
    best_valid_bleu: float | None = None
    since_best: int = 0  # validations since the best one (early stopping)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])

    def record_validation(self, bleu: float | None) -> None:
        if improves(bleu, self.best_valid_bleu):
            self.best_valid_bleu, self.since_best = bleu, 0
        else:
            self.since_best += 1


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Warm-up over train.warmup_steps, then decay to min_lr_ratio as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    p = min(max(progress, 0.0), 1.0)
    if cfg.lr_schedule == "constant":
        decay = 1.0
    elif cfg.lr_schedule == "linear":
        decay = 1.0 - (1.0 - cfg.min_lr_ratio) * p
    else:
        decay = cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    return warm * decay


def micro_batches(cfg: TrainConfig, world: int) -> int:
    """Micro-batches per rank per optimizer step: enough for train.global_batch_tokens over all
    ranks (so the effective batch stays put when an elastic run changes its worker count), or
    one."""
    if not cfg.global_batch_tokens:
        return 1
    return max(1, math.ceil(cfg.global_batch_tokens / (world * cfg.batch_tokens)))


def empty_batch() -> Batch:
    """A one-token batch (an empty sentence each side) for a rank that has run out of rows while
    others have not: it takes part in the step's gradient all-reduce with weight 0."""
    values, offsets = np.zeros(0, np.int64), np.zeros(2, np.int64)
    return make_batch(values, offsets, values, offsets, np.zeros(1, np.int64))


def train_step(
    model,
    optimizer: torch.optim.Optimizer,
    micro: list[Batch],
    cfg: TrainConfig,
    device: torch.device | str,
    precision: Precision,
    weight: float,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One optimizer step over this rank's micro-batches: forward and backward of each (DDP
    all-reduces the gradients once, on the last), gradient clipping, update.

    Each micro-batch's summed loss is scaled by `weight`: world size / target tokens of the whole
    step over all ranks, so that DDP's mean over ranks is the loss per target token of the step
    (0 for a rank's empty_batch). Returns the summed loss (detached, on the device: reading it
    would wait for the GPU)."""
    device = torch.device(device)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for i, batch in enumerate(micro):
        b = batch.to(device)
        last = i == len(micro) - 1
        no_sync = getattr(model, "no_sync", None)  # DDP; a single process has no wrapper
        with nullcontext() if last or no_sync is None else no_sync():
            with precision.autocast():
                loss, _ = model(
                    b.src, b.src_len, b.tgt_in, b.tgt_out, cfg.label_smoothing,
                    cfg.teacher_forcing_ratio, positions=b.tgt_positions,
                )  # fmt: skip
            scaled = loss * weight
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach().float()
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total


class Clock:
    """Training time over all restarts: what the checkpoint counted plus this process's."""

    def __init__(self, max_minutes: float | None, elapsed_before: float):
        self.budget_s = max_minutes * 60 if max_minutes else float("inf")
        self.before, self.t0 = elapsed_before, time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.t0


class Window:
    """This rank's loss and token sums since the last training row of metrics.jsonl. The loss
    stays a device tensor until the row is written (no wait for the GPU at every step)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss: torch.Tensor | float = 0.0
        self.tokens = self.src = self.tgt = 0.0
        self.t = time.perf_counter()

    def add(self, loss: torch.Tensor, batches: list[Batch]) -> None:
        self.loss = self.loss + loss
        for b in batches:
            self.tokens += b.tgt_tokens
            self.src += b.src_tokens
            self.tgt += b.tgt_tokens

    def loss_sum(self) -> float:
        return float(self.loss)


def average_weights(model: torch.nn.Module, snapshots: list[dict]) -> None:
    """Load the element-wise mean of the snapshots' floating-point weights into `model`."""
    averaged = {}
    for key, value in snapshots[-1].items():
        if value.is_floating_point():
            total = sum(snap[key].double() for snap in snapshots)
            averaged[key] = total.div(len(snapshots)).to(value.dtype)
        else:
            averaged[key] = value
    model.load_state_dict(averaged)
