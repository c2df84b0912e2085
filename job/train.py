"""The per-worker training loop: plain PyTorch + DDP, with Ray Train's touch points marked [Ray].

Every worker takes the same number of steps: before each step the workers agree (one small
all-reduce) whether all of them still have a batch and whether the time budget is spent, and
on the learning rate's progress, so no worker ever waits alone in a collective.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, fields

import ray.train
import ray.train.torch
import torch

from job.batching import Batch
from job.checkpoint import read_checkpoint, write_checkpoint
from job.config import Config, TrainConfig
from job.device import autocast, keep_freed_memory
from job.distributed import all_gather, all_reduce, use_shared_memory_allreduce
from job.feeder import EpochBatches, EpochSlice, PartsReader, ValidSet, load_valid_share
from job.metrics import MetricsLog, improves
from job.model import Seq2Seq, build_model, count_parameters
from job.validation import validate
from job.vocab import Vocabulary


@dataclass
class TrainStats:
    """Training counters, saved in every checkpoint's state.json and restored on resume."""

    step: int = 0
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


def train_step(
    model, optimizer, batch: Batch, cfg: TrainConfig, device
) -> tuple[torch.Tensor, int]:
    """One optimizer step on one batch: forward, backward of the loss per target token, gradient
    clipping, update. Returns the summed loss (detached) and the number of target tokens."""
    b = batch.to(device)
    with autocast(device):
        loss, n = model(
            b.src, b.src_len, b.tgt_in, b.tgt_out, cfg.label_smoothing, cfg.teacher_forcing_ratio
        )
    optimizer.zero_grad(set_to_none=True)
    (loss / max(n, 1)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    optimizer.step()
    return loss.detach(), n


class Clock:
    """Training time over all restarts: what the checkpoint counted plus this process's."""

    def __init__(self, max_minutes: float | None, elapsed_before: float):
        self.budget_s = max_minutes * 60 if max_minutes else float("inf")
        self.before, self.t0 = elapsed_before, time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.t0


class Window:
    """This rank's loss and token sums since the last training row of metrics.jsonl."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss = self.tokens = self.src = self.tgt = 0.0
        self.t = time.perf_counter()

    def add(self, loss: torch.Tensor, tokens: int, batch: Batch) -> None:
        self.loss += float(loss)
        self.tokens += tokens
        self.src += batch.src_tokens
        self.tgt += batch.tgt_tokens


@dataclass
class Worker:
    """What the phases of one worker's loop share."""

    cfg: Config
    vocab: Vocabulary
    rank: int
    device: torch.device
    model: Seq2Seq  # the plain module: weights, checkpoints, validation
    ddp: torch.nn.Module  # its DDP wrapper: training steps
    optimizer: torch.optim.Optimizer
    stats: TrainStats
    metrics: MetricsLog | None  # rank 0 only
    valid: ValidSet | None
    rows_per_worker: int


def train_loop_per_worker(loop_config: dict) -> None:
    # [Ray] the run's config, and this worker's rank and device (elastic runs: the group's size
    # is whatever this (re)start got)
    cfg = Config.model_validate(loop_config["config"])
    vocab = Vocabulary.from_files(loop_config["vocab_files"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(cfg.train.threads_per_worker or max(1, int(cfg.scaling.cpus_per_worker)))
    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(cfg.train.seed)

    # model, optimizer, counters; [Ray] restored from the latest checkpoint after a restart
    model = build_model(cfg.model, vocab.src_size, vocab.tgt_size)
    # fused: one kernel per parameter group instead of a chain of element-wise ops per tensor
    # (measured +12% tokens/s for the default model on CPU; CUDA has it too).
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True
    )
    stats = TrainStats()
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            _restore(read_checkpoint(d), model, optimizer, stats)

    # [Ray] the DDP wrapper; gradients live in DDP's all-reduce buckets (no copy in and out)
    ddp = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"gradient_as_bucket_view": True}
    )
    nodes = all_gather(ray.get_runtime_context().get_node_id())
    use_shared_memory_allreduce(ddp, count_parameters(model), device, nodes)
    metrics = MetricsLog(loop_config["run_dir"], stats.step) if rank == 0 else None
    if metrics is not None:
        metrics.add({
            "step": stats.step, "epoch": stats.epoch, "event": "resume" if resumed else "start",
            "parameters": count_parameters(model), "workers": world, "device": str(device),
            "nodes": nodes,
        })  # fmt: skip

    # this worker's data: its slice of each epoch of the prepared data, its share of validation
    parts = loop_config["train_parts"]
    valid = None
    if loop_config["valid_parts"]:
        valid = load_valid_share(PartsReader(loop_config["valid_parts"]), rank, world)
    rows_per_worker = max(1, sum(rows for _, rows in parts) // world)
    w = Worker(
        cfg, vocab, rank, device, model, ddp, optimizer, stats, metrics, valid, rows_per_worker
    )

    clock = Clock(cfg.train.max_minutes, stats.elapsed_s)
    window = Window()
    snapshots: list[dict] = []  # the last train.average_last epoch-end weights
    last_report_step = stats.step if resumed else -1
    out_of_time = False
    while stats.epoch < cfg.train.epochs and not out_of_time:
        # train one epoch, or until the time budget ends it
        epoch = EpochSlice(parts, cfg.train.seed, stats.epoch, rank, world)
        out_of_time = _train_epoch(w, epoch, clock, window)
        if not out_of_time:
            stats.epoch += 1
        elif stats.step == last_report_step:
            break  # the budget ran out right after a report: nothing new to validate or save
        stats.elapsed_s = clock.elapsed()
        last_report_step = stats.step

        # validate, then report metrics and a checkpoint
        _validate_and_report(w)

        # keep weights for averaging; stop early when validation BLEU stalls
        if cfg.train.average_last > 1:
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            del snapshots[: -cfg.train.average_last]
        patience = cfg.train.early_stopping_patience
        if patience and stats.since_best >= patience:
            if metrics is not None:
                metrics.add({
                    "step": stats.step, "epoch": stats.epoch, "event": "early_stop",
                    "best_valid_bleu": stats.best_valid_bleu, "patience": patience,
                })  # fmt: skip
            break

    # the mean of the last epochs' weights competes with them on validation BLEU
    if len(snapshots) > 1:
        _average_into(model, snapshots)
        _validate_and_report(w, {"averaged": len(snapshots)})


def _restore(loaded, model, optimizer, stats: TrainStats) -> None:
    model.load_state_dict(loaded.model().state_dict())
    optimizer_state = loaded.optimizer_state()
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    stats.load_state_dict(loaded.state)


def _train_epoch(w: Worker, rows: EpochSlice, clock: Clock, window: Window) -> bool:
    """Steps over this epoch's batches while every rank has one; returns whether time ran out."""
    cfg, stats = w.cfg, w.stats
    batches = EpochBatches(rows, cfg, w.rank, stats.epoch)
    rows_done = 0
    while True:
        batch = batches.next()
        # agree with every rank: is anyone out of batches, is time spent, where is the schedule
        elapsed = clock.elapsed()
        epochs_done = stats.epoch + rows_done / w.rows_per_worker
        progress = max(elapsed / clock.budget_s, epochs_done / cfg.train.epochs)
        exhausted, elapsed, progress = all_reduce(
            [float(batch is None), elapsed, progress], op="max"
        )
        out_of_time = elapsed >= clock.budget_s
        if exhausted or out_of_time:
            return out_of_time

        # forward, backward, update
        for group in w.optimizer.param_groups:
            group["lr"] = cfg.train.lr * lr_factor(cfg.train, stats.step, progress)
        loss, n = train_step(w.ddp, w.optimizer, batch, cfg.train, w.device)
        stats.step += 1
        rows_done += batch.src.size(0)
        window.add(loss, n, batch)

        # log every train.log_every_steps
        if stats.step % cfg.train.log_every_steps == 0:
            epoch = stats.epoch + rows_done / w.rows_per_worker
            _log_train(w, window, progress, epoch, elapsed)


def _log_train(w: Worker, window: Window, progress: float, epoch: float, elapsed: float) -> None:
    """Collective: sums the window over ranks; rank 0 writes the training row."""
    loss_sum, tokens, src, tgt = all_reduce([window.loss, window.tokens, window.src, window.tgt])
    seconds = max(time.perf_counter() - window.t, 1e-9)
    w.stats.src_tokens += int(src)
    w.stats.tgt_tokens += int(tgt)
    if w.metrics is not None:
        train_loss = loss_sum / max(tokens, 1.0)
        w.metrics.add({
            "step": w.stats.step, "epoch": round(epoch, 4),
            "train_loss": round(train_loss, 5),
            "train_ppl": round(math.exp(min(train_loss, 50.0)), 3),
            "lr": w.optimizer.param_groups[0]["lr"],
            "src_tokens": w.stats.src_tokens, "tgt_tokens": w.stats.tgt_tokens,
            "tokens_per_s": round((src + tgt) / seconds, 1), "elapsed_s": round(elapsed, 2),
            "progress": round(progress, 4),
        })  # fmt: skip
    window.reset()


def _validate_and_report(w: Worker, extra: dict | None = None) -> None:
    """Collective: validation, then [Ray] ray.train.report on every rank (a barrier), with the
    checkpoint that rank 0 writes. Tracks the best validation BLEU for early stopping."""
    stats = w.stats
    result = {
        "step": stats.step,
        "epoch": stats.epoch,
        "elapsed_s": round(stats.elapsed_s, 2),
        **(extra or {}),
    }
    if w.valid is not None:
        result.update(validate(w.model, w.valid, w.vocab, w.cfg, w.device))
        stats.record_validation(result.get("valid_bleu"))
        result["best_valid_bleu"] = stats.best_valid_bleu
    rank_steps = all_gather(stats.step)  # every rank's step count: the same, or DDP went wrong
    if w.metrics is not None:
        w.metrics.add({**result, "rank_steps": rank_steps})
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if w.rank == 0:
            state = {**stats.state_dict(), "metrics": result}
            write_checkpoint(tmp, w.model, w.optimizer, state, w.cfg, w.vocab)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(result, checkpoint=checkpoint)


def _average_into(model: torch.nn.Module, snapshots: list[dict]) -> None:
    """Load the element-wise mean of the snapshots' floating-point weights into `model`."""
    averaged = {}
    for key, value in snapshots[-1].items():
        if value.is_floating_point():
            total = sum(snap[key].double() for snap in snapshots)
            averaged[key] = total.div(len(snapshots)).to(value.dtype)
        else:
            averaged[key] = value
    model.load_state_dict(averaged)
