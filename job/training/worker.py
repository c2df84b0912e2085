"""The per-worker training loop: plain PyTorch + DDP, with Ray Train's touch points marked [Ray].

Every worker takes the same number of steps: before each step the workers agree (one small
gather on the host) on whether any of them still has a batch, whether the time budget is spent,
the learning rate's progress and the step's target tokens (the loss is per target token of the
whole step). An epoch ends when every rank has trained all of its rows; a rank that runs out
first joins the remaining steps with an empty batch of weight 0, so each row is trained once per
epoch. Checkpoints (epoch ends, every train.checkpoint_every_steps, the end of
train.max_minutes) carry the position in the epoch (job.training.position).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass

import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointUploadMode

from job.checkpoint import host_copy, read_checkpoint, write_checkpoint
from job.config import Config
from job.corpus.vocab import Vocabulary
from job.metrics import MetricsLog
from job.model.device import Precision, keep_freed_memory
from job.model.seq2seq import Seq2Seq, build_model, count_parameters
from job.training.distributed import (
    all_gather,
    all_reduce,
    gather_floats,
    init_control_group,
    use_shared_memory_allreduce,
)
from job.training.feeder import EpochBatches, PartsReader, ValidSet, load_valid_share
from job.training.position import EpochOrder, EpochProgress, EpochShare, load_done, save_done
from job.training.step import (
    Clock,
    TrainStats,
    Window,
    average_weights,
    empty_batch,
    lr_factor,
    micro_batches,
    train_step,
)
from job.training.validation import validate


@dataclass
class Worker:
    """What the phases of one worker's loop share."""

    cfg: Config
    vocab: Vocabulary
    rank: int
    world: int
    device: torch.device
    model: Seq2Seq  # the plain module: weights, checkpoints, validation
    ddp: torch.nn.Module  # its DDP wrapper: training steps
    optimizer: torch.optim.Optimizer
    precision: Precision
    scaler: torch.amp.GradScaler | None  # fp16 only
    stats: TrainStats
    metrics: MetricsLog | None  # rank 0 only
    valid: ValidSet | None
    parts: list  # the prepared training parts: (path, rows)
    reported_step: int = -1  # the step of the last checkpoint


def train_loop_per_worker(loop_config: dict) -> None:
    # [Ray] the run's config, and this worker's rank and device (elastic runs: the group's size
    # is whatever this (re)start got)
    cfg = Config.model_validate(loop_config["config"])
    vocab = Vocabulary.from_files(loop_config["vocab_files"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    init_control_group()
    torch.set_num_threads(cfg.train.threads_per_worker or max(1, int(cfg.scaling.cpus_per_worker)))
    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(cfg.train.seed)
    precision = Precision(cfg.train.precision or _default_precision(device), device)
    parts = loop_config["train_parts"]

    # model, optimizer, counters; [Ray] restored from the latest checkpoint after a restart.
    # The model is on its device before the optimizer is built and its state loaded: the fused
    # AdamW kernel needs its state on the parameters' device, and load_state_dict puts it there.
    model = build_model(cfg.model, vocab.src_size, vocab.tgt_size).to(device)
    # fused: one kernel per parameter group instead of a chain of element-wise ops per tensor
    # (measured +12% tokens/s for the default model on CPU; CUDA has it too).
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True
    )
    scaler = precision.grad_scaler()
    stats, position = TrainStats(), None
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            position = _restore(d, model, optimizer, scaler, stats, parts)

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
            "nodes": nodes, "precision": precision.name,
            "micro_batches": micro_batches(cfg.train, world),
            **({"epoch_rows_done": position["rows"]} if position else {}),
        })  # fmt: skip

    # this worker's share of validation; its share of each epoch is read in _train_epoch
    valid = None
    if loop_config["valid_parts"]:
        valid = load_valid_share(PartsReader(loop_config["valid_parts"]), rank, world)
    w = Worker(
        cfg, vocab, rank, world, device, model, ddp, optimizer, precision, scaler, stats,
        metrics, valid, parts,
    )  # fmt: skip

    clock = Clock(cfg.train.max_minutes, stats.elapsed_s)
    window = Window()
    snapshots: list[dict] = []  # the last train.average_last epoch-end weights
    w.reported_step = stats.step if resumed else -1
    while stats.epoch < cfg.train.epochs:
        # train one epoch (or the rest of it), or until the time budget ends it
        progress = EpochProgress(
            EpochOrder(parts, cfg.train.seed, stats.epoch), rank, world, position
        )
        position = None
        out_of_time = _train_epoch(w, progress, clock, window)
        if out_of_time and stats.step == w.reported_step:
            break  # the budget ran out right after a checkpoint: nothing new to save
        stats.elapsed_s = clock.elapsed()
        if out_of_time:  # a checkpoint with the position in the epoch: a resume goes on from it
            _report(w, progress, run_validation=True)
            break
        stats.epoch += 1
        rows, digest = _epoch_rows(progress)
        _report(
            w,
            None,
            run_validation=True,
            extra={"epoch_rows": rows, "epoch_digest": f"{digest:016x}"},
        )

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
        average_weights(model, snapshots)
        _report(w, None, run_validation=True, extra={"averaged": len(snapshots)})


def _default_precision(device: torch.device) -> str:
    """bf16 autocast on GPUs (no loss scaling needed: bf16 has fp32's range); fp32 on CPUs."""
    return "bf16" if device.type == "cuda" else "fp32"


def _restore(directory, model, optimizer, scaler, stats: TrainStats, parts) -> dict | None:
    """Load a checkpoint into the loop's objects; returns the position in the epoch it was
    taken in (None at an epoch end)."""
    loaded = read_checkpoint(directory)
    model.load_state_dict(loaded.model().state_dict())
    optimizer_state = loaded.optimizer_state()
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if scaler is not None and loaded.state.get("scaler"):
        scaler.load_state_dict(loaded.state["scaler"])
    stats.load_state_dict(loaded.state)
    position = loaded.state.get("position")
    if not position or position["epoch"] != stats.epoch:
        return None
    total = sum(rows for _, rows in parts)
    return {**position, "done": load_done(directory, total)}


def _train_epoch(w: Worker, progress: EpochProgress, clock: Clock, window: Window) -> bool:
    """Steps over this epoch's rows until every rank has trained its share; returns whether the
    time budget ended the epoch first."""
    cfg, stats, order = w.cfg.train, w.stats, progress.order
    share = EpochShare(order, progress.positions)
    batches = EpochBatches(share, w.cfg, w.rank, stats.epoch, on_chunk=progress.start_chunk)
    micro = micro_batches(cfg, w.world)
    while True:
        taken = [b for b in (batches.next() for _ in range(micro)) if b is not None]
        # agree with every rank: does anyone have a batch, is time spent, where is the schedule
        gathered = gather_floats([
            len(taken), sum(b.batch.tgt_tokens for b in taken), clock.elapsed(), progress.rows
        ])  # fmt: skip
        if not any(g[0] for g in gathered):
            return False
        elapsed = max(g[2] for g in gathered)
        if elapsed >= clock.budget_s:
            return True
        epoch = stats.epoch + (progress.rows_before + sum(g[3] for g in gathered)) / order.total
        schedule = max(elapsed / clock.budget_s, epoch / cfg.epochs)

        # forward, backward, update
        for group in w.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, stats.step, schedule)
        step_tokens = sum(g[1] for g in gathered)
        weight = w.world / max(step_tokens, 1.0) if taken else 0.0
        micro_list = [b.batch for b in taken] or [empty_batch()]
        loss = train_step(
            w.ddp, w.optimizer, micro_list, cfg, w.device, w.precision, weight, w.scaler
        )
        stats.step += 1
        for b in taken:
            progress.trained(b.positions, b.ids)
        window.add(loss, [b.batch for b in taken])

        # log every train.log_every_steps; checkpoint and validate every N steps when asked
        if stats.step % cfg.log_every_steps == 0:
            _log_train(w, window, schedule, epoch, elapsed)
        checkpoint = (
            bool(cfg.checkpoint_every_steps) and stats.step % cfg.checkpoint_every_steps == 0
        )
        validate_now = bool(cfg.validate_every_steps) and stats.step % cfg.validate_every_steps == 0
        if checkpoint or validate_now:
            stats.elapsed_s = clock.elapsed()
            _report(w, progress if checkpoint else None, run_validation=validate_now, epoch=epoch)


def _epoch_rows(progress: EpochProgress) -> tuple[int, int]:
    """Collective: the rows the finished epoch trained over all ranks and restarts, and their
    digest (job.training.position)."""
    return progress.totals(all_gather((progress.rows, progress.digest)))


def _log_train(w: Worker, window: Window, progress: float, epoch: float, elapsed: float) -> None:
    """Collective: sums the window over ranks; rank 0 writes the training row."""
    loss_sum, tokens, src, tgt = all_reduce(
        [window.loss_sum(), window.tokens, window.src, window.tgt]
    )
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
            **({"max_memory_gb": round(torch.cuda.max_memory_allocated(w.device) / 2**30, 2)}
               if w.device.type == "cuda" else {}),
        })  # fmt: skip
    window.reset()


def _report(
    w: Worker,
    progress: EpochProgress | None,
    run_validation: bool,
    epoch: float | None = None,
    extra: dict | None = None,
) -> None:
    """Collective: validation (when asked), then [Ray] ray.train.report on every rank, with the
    checkpoint that rank 0 writes when `progress` is given (mid-epoch: with the position in the
    epoch) or at an epoch end (progress None and epoch None). Rank 0 copies the weights and
    optimizer moments to host memory; Ray's upload thread writes and uploads the files while
    every rank trains on."""
    stats = w.stats
    at_epoch_end = progress is None and epoch is None
    checkpoint_due = progress is not None or at_epoch_end
    result = {
        "step": stats.step,
        "epoch": stats.epoch if epoch is None else round(epoch, 4),
        "elapsed_s": round(stats.elapsed_s, 2),
        **(extra or {}),
    }
    if run_validation and w.valid is not None:
        result.update(validate(w.model, w.valid, w.vocab, w.cfg, w.device))
        stats.record_validation(result.get("valid_bleu"))
        result["best_valid_bleu"] = stats.best_valid_bleu
    elif w.valid is not None:
        result["valid_bleu"] = float("nan")  # not validated: ranks below every validated one
    position = _gather_position(w, progress) if progress is not None else None
    if run_validation:
        rank_steps = all_gather(stats.step)  # every rank's step count: the same, or DDP went wrong
        if w.metrics is not None:
            w.metrics.add({**result, "rank_steps": rank_steps})
    elif w.metrics is not None:
        rows = {"epoch_rows_done": position[0]["rows"]} if position else {}
        w.metrics.add({"step": stats.step, "epoch": result["epoch"], "event": "checkpoint", **rows})
    if not checkpoint_due:
        ray.train.report(result)
        return
    checkpoint, upload_fn = None, None
    if w.rank == 0:
        state = {**stats.state_dict(), "metrics": result}
        if w.scaler is not None:
            state["scaler"] = w.scaler.state_dict()
        if position is not None:
            state["position"] = position[0]
        # what the weights and moments are now; the files are written by Ray's upload thread
        weights, moments = host_copy(w.model.state_dict()), host_copy(w.optimizer.state_dict())
        done = None if position is None else position[1]

        def upload(ckpt: ray.train.Checkpoint, name: str) -> ray.train.Checkpoint:
            write_checkpoint(ckpt.path, weights, moments, state, w.cfg, w.vocab)
            if done is not None:
                save_done(ckpt.path, done)
            return ray.train.get_context().get_storage().persist_current_checkpoint(ckpt, name)

        directory = tempfile.mkdtemp(prefix="checkpoint-")  # Ray deletes it after the upload
        checkpoint = ray.train.Checkpoint.from_directory(directory)
        upload_fn = upload
    w.reported_step = stats.step
    ray.train.report(
        result, checkpoint=checkpoint, checkpoint_upload_mode=CheckpointUploadMode.ASYNC,
        checkpoint_upload_fn=upload_fn,
    )  # fmt: skip


def _gather_position(w: Worker, progress: EpochProgress) -> tuple[dict, object] | None:
    """Collective: every rank's progress on rank 0, combined into the epoch's done bitmap."""
    locals_ = all_gather(progress.local())
    if w.rank != 0:
        return None
    done, rows, digest = progress.combine(locals_)
    return {"epoch": w.stats.epoch, "rows": rows, "digest": digest}, done
