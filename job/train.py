"""Training under Ray Train: the per-worker loop (plain PyTorch + DDP) and the TorchTrainer that runs it.

Every worker takes the same number of steps: before each step the workers agree (one small
all-reduce) whether all of them still have a batch and whether the time budget is spent, and
on the learning rate's progress, so no worker ever waits alone in a collective.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from job import storage
from job.batching import Batch, chunk_batches
from job.checkpoint import read_checkpoint, write_checkpoint
from job.config import Config
from job.data import list_column
from job.evaluate import score
from job.model import build_model, count_parameters
from job.search import decode_ids
from job.vocab import Vocabulary

METRICS_FILE = "metrics.jsonl"


# ----------------------------------------------------------------------------- worker side

def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(values: list[float], op=None) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if _distributed():
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.cpu().tolist()


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
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


class SharedMemoryAllReduce:
    """DDP gradient all-reduce through one shared-memory file, for ranks that share a host.

    gloo all-reduces over TCP even between processes on one machine: 27 ms for the 33 MB of
    gradients of an 8M-parameter model on this 2-core box, against 17 ms for this (measured,
    BENCHMARKS.md). Each rank copies its bucket into its own slot; after a barrier each rank
    sums one slice of the slots into a shared result; after a second barrier every rank copies
    the result back. Collective order is DDP's bucket order, identical on every rank. Used only
    on CPU when every rank runs on the same node and /dev/shm has room; otherwise (multi-node
    runs included) gloo's own all-reduce stays.
    """

    FOLDER = "/dev/shm"

    @classmethod
    def create(cls, numel: int) -> "SharedMemoryAllReduce | None":
        """Collective: every rank calls it. None (keep gloo) where /dev/shm is missing or has
        less than twice the room needed (Docker's default /dev/shm is 64 MB; a tmpfs that runs
        full would kill the workers with SIGBUS)."""
        world = dist.get_world_size()
        name = [None]
        if dist.get_rank() == 0:
            need = (world + 1) * numel * 4
            try:
                st = os.statvfs(cls.FOLDER)
                room = st.f_bavail * st.f_frsize
            except OSError:
                room = 0
            if room >= 2 * need:
                name[0] = os.path.join(cls.FOLDER, f"nmt-ddp-grads-{uuid.uuid4().hex}")
                with open(name[0], "wb") as f:
                    f.truncate(need)
        dist.broadcast_object_list(name, src=0)
        return cls(name[0], numel) if name[0] else None

    def __init__(self, path: str, numel: int):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        memory = torch.from_file(path, shared=True, size=(self.world + 1) * numel, dtype=torch.float32)
        dist.barrier()
        if self.rank == 0:
            os.unlink(path)  # every rank has it mapped; the memory goes when the last one exits
        self.slots = memory[: self.world * numel].view(self.world, numel)
        self.result = memory[self.world * numel:]

    def all_reduce_mean(self, buffer: torch.Tensor) -> torch.Tensor:
        n = buffer.numel()
        self.slots[self.rank, :n].copy_(buffer)
        dist.barrier()
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        torch.sum(self.slots[:, lo:hi], dim=0, out=self.result[lo:hi]).div_(self.world)
        dist.barrier()
        return buffer.copy_(self.result[:n])


def shared_memory_allreduce_hook(state: SharedMemoryAllReduce, bucket):
    """DDP comm hook (register_comm_hook(state, hook)): the bucket's mean over ranks, in place.
    No return annotation: DDP compares it literally with Future[Tensor], and this module's
    `from __future__ import annotations` would make it a string."""
    future = torch.futures.Future()
    future.set_result(state.all_reduce_mean(bucket.buffer()))
    return future


def lr_factor(cfg, step: int, progress: float) -> float:
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


class MetricsLog:
    """metrics.jsonl in the run directory, written by rank 0 only; rewritten whole on each flush
    (it is small) so it works on object stores too. On resume, rows after the checkpoint's step
    are dropped: those steps are trained again."""

    def __init__(self, run_dir: str, resume_step: int):
        self.path = storage.join(run_dir, METRICS_FILE)
        self.rows: list[str] = []
        if resume_step and storage.exists(self.path):
            for line in storage.read_text(self.path).splitlines():
                if line.strip() and json.loads(line).get("step", 0) <= resume_step:
                    self.rows.append(line)

        self.tb = _tensorboard_writer(run_dir)

    def add(self, row: dict) -> None:
        self.rows.append(json.dumps(row))
        storage.write_text(self.path, "\n".join(self.rows) + "\n")
        if self.tb is not None and "step" in row:
            group = "valid" if "valid_loss" in row else "train"
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{group}/{key}", value, row["step"])
            self.tb.flush()


def _tensorboard_writer(run_dir: str):
    """TensorBoard event files in run_dir/tensorboard when tensorboardX is installed (local runs)."""
    if storage.is_uri(run_dir):
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(storage.join(run_dir, "tensorboard"))


@dataclass
class ValidSet:
    """This worker's share of the validation set (every row is used, none dropped)."""

    src_vals: np.ndarray
    src_offs: np.ndarray
    tgt_vals: np.ndarray
    tgt_offs: np.ndarray
    index: np.ndarray        # global row index of each local row
    references: list[str]

    @property
    def src_lists(self) -> list[list[int]]:
        v, o = self.src_vals, self.src_offs
        return [v[o[i]:o[i + 1]].tolist() for i in range(len(o) - 1)]


def _load_valid(rank: int, world: int) -> ValidSet:
    it = ray.train.get_dataset_shard("valid")
    src, tgt, ref, index, seen = [], [], [], [], 0
    for table in it.iter_batches(batch_format="pyarrow", batch_size=4096):
        n = table.num_rows
        keep = np.arange(seen, seen + n)
        mine = keep % world == rank
        sel = np.nonzero(mine)[0]
        if len(sel):
            t = table.take(sel)
            src.append(t.column("src_ids")), tgt.append(t.column("tgt_ids"))
            ref += t.column("target").to_pylist()
            index.append(keep[sel])
        seen += n
    if not src:
        empty = np.zeros(0, np.int64)
        return ValidSet(empty, np.zeros(1, np.int64), empty, np.zeros(1, np.int64), empty, [])
    sv, so = list_column(pa.chunked_array([c for col in src for c in col.chunks]))
    tv, to = list_column(pa.chunked_array([c for col in tgt for c in col.chunks]))
    return ValidSet(sv, so, tv, to, np.concatenate(index), ref)


class EpochBatches:
    """Token-budget batches over this worker's shard for one epoch, bucketed and shuffled chunk by
    chunk, in cost-matched order: every rank's i-th batch of a chunk comes from the same cost
    quantile, so DDP ranks rarely wait on each other (batching.cost_matched_order).
    `drain()` reads the rest of the shard without training on it, so that Ray Data's streaming
    split sees every worker finish the epoch before the next one starts."""

    def __init__(self, shard, cfg: Config, rank: int, epoch: int):
        self.tables = iter(shard.iter_batches(batch_format="pyarrow", batch_size=cfg.train.shuffle_chunk_rows, prefetch_batches=1))
        self.batches = iter(())
        self.cfg, self.epoch, self.chunk = cfg, epoch, 0
        self.rng = np.random.default_rng([cfg.train.seed, rank, epoch])

    def next(self) -> Batch | None:
        while True:
            batch = next(self.batches, None)
            if batch is not None:
                return batch
            table = next(self.tables, None)
            if table is None:
                return None
            sv, so = list_column(table.column("src_ids"))
            tv, to = list_column(table.column("tgt_ids"))
            shared = np.random.default_rng([self.cfg.train.seed, 1_000_003, self.epoch, self.chunk])  # alike on every rank
            self.chunk += 1
            self.batches = chunk_batches(sv, so, tv, to, self.cfg.train.batch_tokens, self.rng, shared)

    def drain(self) -> None:
        for _ in self.tables:
            pass


@torch.no_grad()
def validate(model, valid: ValidSet, vocab: Vocabulary, cfg: Config, device) -> dict:
    """Loss/perplexity over every validation row and BLEU/chrF over the first valid_bleu_max_rows."""
    model.eval()
    loss_sum, tokens = 0.0, 0
    rng = np.random.default_rng(0)
    if len(valid.index):
        for batch in chunk_batches(valid.src_vals, valid.src_offs, valid.tgt_vals, valid.tgt_offs, cfg.train.batch_tokens, rng):
            b = batch.to(device)
            with _autocast(device):
                loss, n = model(b.src, b.src_len, b.tgt_in, b.tgt_out)
            loss_sum += float(loss)
            tokens += n
    limit = cfg.train.valid_bleu_max_rows
    pick = [i for i, g in enumerate(valid.index) if limit is None or g < limit]
    sources = valid.src_lists
    decoded = decode_ids(model, [sources[i] for i in pick], batch_size=cfg.translate.batch_size,
                         max_src_len=cfg.data.max_length, max_length_ratio=cfg.translate.max_length_ratio, device=device)
    hyps = vocab.decode_tgt(decoded.ids)
    mine = [(int(valid.index[i]), h, valid.references[i]) for i, h in zip(pick, hyps)]
    gathered = [mine]
    if _distributed():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
    rows = sorted(r for part in gathered for r in part)
    loss_sum, tokens = _all_reduce([loss_sum, float(tokens)])
    model.train()
    out = {"valid_loss": loss_sum / max(tokens, 1.0), "valid_rows": len(rows)}
    out["valid_ppl"] = math.exp(min(out["valid_loss"], 50.0))
    if rows:
        scores = score([r[1] for r in rows], [r[2] for r in rows])
        out["valid_bleu"], out["valid_chrf"] = scores["bleu"], scores["chrf"]
    return out


def _autocast(device):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=getattr(device, "type", str(device)) == "cuda")


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = Config.model_validate(loop_config["config"])
    vocab = Vocabulary.from_files(loop_config["vocab_files"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()  # elastic runs: whatever size this restart got
    rows_per_worker = max(1, loop_config["train_rows"] // world)
    torch.set_num_threads(cfg.train.threads_per_worker or max(1, int(cfg.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(cfg.train.seed)

    model = build_model(cfg.model, vocab.src_size, vocab.tgt_size)
    # fused: one kernel per parameter group instead of a chain of element-wise ops per tensor
    # (measured +12% tokens/s for the default model on CPU; CUDA has it too).
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)
    state = {"step": 0, "epoch": 0, "elapsed_s": 0.0, "src_tokens": 0, "tgt_tokens": 0, "best_valid_bleu": None}
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            loaded = read_checkpoint(d)
            model.load_state_dict(loaded.model().state_dict())
            optimizer_state = loaded.optimizer_state()
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
            state.update(loaded.state)
    raw = model
    # Gradients live in DDP's all-reduce buckets (no copy in and out of them each step).
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"gradient_as_bucket_view": True})

    metrics = MetricsLog(loop_config["run_dir"], state["step"]) if rank == 0 else None
    nodes = [ray.get_runtime_context().get_node_id()]
    if _distributed():
        nodes = [None] * world
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
        if device.type == "cpu" and len(set(nodes)) == 1:
            reducer = SharedMemoryAllReduce.create(count_parameters(raw))
            if reducer is not None:
                model.register_comm_hook(reducer, shared_memory_allreduce_hook)
    if metrics is not None:
        metrics.add({"step": state["step"], "epoch": state["epoch"], "event": "resume" if resumed else "start",
                     "parameters": count_parameters(raw), "workers": world, "device": str(device), "nodes": nodes})
    valid = _load_valid(rank, world) if loop_config["has_valid"] else None
    shard = ray.train.get_dataset_shard("train")
    budget_s = cfg.train.max_minutes * 60 if cfg.train.max_minutes else float("inf")
    start_elapsed, t_start = state["elapsed_s"], time.perf_counter()
    out_of_time = False
    snapshots: list[dict] = []  # last train.average_last epoch-end weights (rank-identical under DDP)
    last_report_step = state["step"] if resumed else -1
    window = {"loss": 0.0, "tokens": 0.0, "src": 0.0, "tgt": 0.0, "t": time.perf_counter()}

    while state["epoch"] < cfg.train.epochs and not out_of_time:
        batches = EpochBatches(shard, cfg, rank, state["epoch"])
        rows_done = 0
        while True:
            batch = batches.next()
            elapsed = start_elapsed + time.perf_counter() - t_start
            progress = max(elapsed / budget_s, (state["epoch"] + rows_done / rows_per_worker) / cfg.train.epochs)
            exhausted, elapsed, progress = _all_reduce([float(batch is None), elapsed, progress], dist.ReduceOp.MAX if _distributed() else None)
            if elapsed >= budget_s:
                out_of_time = True
            if exhausted or out_of_time:
                if exhausted and not out_of_time:
                    batches.drain()
                break
            for group in optimizer.param_groups:
                group["lr"] = cfg.train.lr * lr_factor(cfg.train, state["step"], progress)
            b = batch.to(device)
            with _autocast(device):
                loss, n = model(b.src, b.src_len, b.tgt_in, b.tgt_out, cfg.train.label_smoothing, cfg.train.teacher_forcing_ratio)
            optimizer.zero_grad(set_to_none=True)
            (loss / max(n, 1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm)
            optimizer.step()
            state["step"] += 1
            rows_done += b.src.size(0)
            window["loss"] += float(loss.detach())
            window["tokens"] += n
            window["src"] += b.src_tokens
            window["tgt"] += b.tgt_tokens
            if state["step"] % cfg.train.log_every_steps == 0:
                _log_train(window, state, cfg, optimizer, progress, rows_done, rows_per_worker, elapsed, metrics)
        if not out_of_time:
            state["epoch"] += 1
        elif state["step"] == last_report_step:
            break  # the budget ran out right after a report: nothing new to validate or save
        state["elapsed_s"] = start_elapsed + time.perf_counter() - t_start
        last_report_step = state["step"]
        _end_of_epoch(raw, optimizer, valid, vocab, cfg, device, state, metrics, rank)
        if cfg.train.average_last > 1:
            snapshots.append({k: v.detach().clone() for k, v in raw.state_dict().items()})
            del snapshots[:-cfg.train.average_last]
        patience = cfg.train.early_stopping_patience
        if patience and state.get("since_best", 0) >= patience:
            if metrics is not None:
                metrics.add({"step": state["step"], "epoch": state["epoch"], "event": "early_stop",
                             "best_valid_bleu": state["best_valid_bleu"], "patience": patience})
            break
    if len(snapshots) > 1:
        # The mean of the last epochs' weights competes with them on validation BLEU.
        _average_into(raw, snapshots)
        _end_of_epoch(raw, optimizer, valid, vocab, cfg, device, state, metrics, rank, {"averaged": len(snapshots)})


def _log_train(window, state, cfg, optimizer, progress, rows_done, rows_per_worker, elapsed, metrics) -> None:
    loss_sum, tokens, src, tgt = _all_reduce([window["loss"], window["tokens"], window["src"], window["tgt"]])
    now = time.perf_counter()
    state["src_tokens"] += int(src)
    state["tgt_tokens"] += int(tgt)
    if metrics is not None:
        train_loss = loss_sum / max(tokens, 1.0)
        row = {
            "step": state["step"], "epoch": round(state["epoch"] + rows_done / rows_per_worker, 4),
            "train_loss": round(train_loss, 5), "train_ppl": round(math.exp(min(train_loss, 50.0)), 3),
            "lr": optimizer.param_groups[0]["lr"], "src_tokens": state["src_tokens"], "tgt_tokens": state["tgt_tokens"],
            "tokens_per_s": round((src + tgt) / max(now - window["t"], 1e-9), 1), "elapsed_s": round(elapsed, 2),
            "progress": round(progress, 4),
        }
        metrics.add(row)
    window.update(loss=0.0, tokens=0.0, src=0.0, tgt=0.0, t=now)


def _end_of_epoch(raw, optimizer, valid, vocab, cfg, device, state, metrics, rank, extra: dict | None = None) -> None:
    """Validate, then report metrics and a checkpoint (rank 0 writes it; every rank reports).

    Tracks the best validation BLEU and the validations since it improved (early stopping).
    """
    result = {"step": state["step"], "epoch": state["epoch"], "elapsed_s": round(state["elapsed_s"], 2), **(extra or {})}
    if valid is not None:
        result.update(validate(raw, valid, vocab, cfg, device))
        best = state.get("best_valid_bleu")
        if "valid_bleu" in result and (best is None or result["valid_bleu"] > best):
            state["best_valid_bleu"] = result["valid_bleu"]
            state["since_best"] = 0
        else:
            state["since_best"] = state.get("since_best", 0) + 1
        result["best_valid_bleu"] = state["best_valid_bleu"]
    if metrics is not None:
        metrics.add(result)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            write_checkpoint(tmp, raw, optimizer, {**state, "metrics": result}, cfg, vocab)
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(result, checkpoint=checkpoint)


def _average_into(raw, snapshots: list[dict]) -> None:
    """Load the element-wise mean of the snapshots' floating-point weights into `raw`."""
    averaged = {}
    for key, value in snapshots[-1].items():
        if value.is_floating_point():
            averaged[key] = sum(snap[key].double() for snap in snapshots).div(len(snapshots)).to(value.dtype)
        else:
            averaged[key] = value
    raw.load_state_dict(averaged)


# ----------------------------------------------------------------------------- driver side

class ProgressPrinter(threading.Thread):
    """Prints new rows of the run's metrics.jsonl as one readable line each, on the driver, while
    the trainer runs (Ray's per-worker log forwarding stays off unless --verbose)."""

    def __init__(self, run_dir: str, total_epochs: int, out=None):
        super().__init__(daemon=True)
        self.path = storage.join(run_dir, METRICS_FILE)
        self.total_epochs = total_epochs
        self.out = out or sys.stdout
        self.seen = 0
        self.best: float | None = None
        self.stop_event = threading.Event()
        self.interval = 10.0 if storage.is_uri(run_dir) else 1.0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
        self.poll()

    def poll(self) -> None:
        try:
            lines = storage.read_text(self.path).splitlines() if storage.exists(self.path) else []
        except OSError:
            return
        if len(lines) < self.seen:  # rewritten after a restart from a checkpoint
            self.seen = len(lines)
        for line in lines[self.seen:]:
            try:
                print(self.format(json.loads(line)), file=self.out, flush=True)
            except (ValueError, KeyError):
                pass
        self.seen = len(lines)

    def format(self, r: dict) -> str:
        if r.get("event") in ("start", "resume"):
            what = "resumed at step " + str(r["step"]) + ": " if r["event"] == "resume" else ""
            return (f"[train] {what}{r['parameters']:,} parameters, {r['workers']} worker(s) on {r['device']}, "
                    f"{len(set(r.get('nodes', [])))} node(s)")
        if "train_loss" in r:
            eta, total = "", ""
            if r.get("progress"):
                eta = f"  eta {max(r['elapsed_s'] / r['progress'] - r['elapsed_s'], 0):.0f}s"
                total = f"/~{round(r['step'] / r['progress'])}"
            return (f"[train] epoch {r['epoch']:.2f}/{self.total_epochs} step {r['step']}{total}  loss {r['train_loss']:.3f}  "
                    f"ppl {r['train_ppl']:.2f}  lr {r['lr']:.2e}  {r['tokens_per_s']:.0f} tok/s  "
                    f"elapsed {r['elapsed_s']:.0f}s{eta}")
        if "valid_loss" in r:
            bleu = r.get("valid_bleu")
            if bleu is not None and (self.best is None or bleu > self.best):
                self.best = bleu
            extra = f"  BLEU {bleu:.2f}  chrF {r.get('valid_chrf', 0):.2f}  best BLEU {self.best:.2f}" if bleu is not None else ""
            what = f"mean of the last {r['averaged']} checkpoints" if r.get("averaged") else f"epoch {r['epoch']} step {r['step']}"
            return f"[valid] {what}  loss {r['valid_loss']:.3f}  ppl {r['valid_ppl']:.2f}{extra}"
        if r.get("event") == "early_stop":
            return f"[train] early stop at epoch {r['epoch']}: no better validation BLEU for {r['patience']} validations"
        return json.dumps(r)


def fit(cfg: Config, vocab: Vocabulary, train_ds, valid_ds, train_rows: int):
    """Run the TorchTrainer; returns Ray Train's Result."""
    datasets = {"train": train_ds}
    if valid_ds is not None:
        datasets["valid"] = valid_ds
    score = "valid_bleu" if valid_ds is not None else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"), "vocab_files": vocab.to_files(), "run_dir": cfg.run_dir,
            "train_rows": train_rows, "has_valid": valid_ds is not None,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.ray_num_workers(), use_gpu=cfg.scaling.use_gpu,
            elastic_resize_monitor_interval_s=cfg.scaling.elastic_resize_interval_s,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if cfg.scaling.use_gpu else {})},
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=cfg.name, storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints, checkpoint_score_attribute=score,
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
        ),
    )
    printer = ProgressPrinter(cfg.run_dir, cfg.train.epochs)
    printer.start()
    try:
        return trainer.fit()
    finally:
        printer.stop()


def checkpoint_uri(ckpt: Checkpoint) -> str:
    """A path or URI the checkpoint can be read back from: Ray Train keeps cloud paths without
    their scheme (pyarrow's filesystem holds it), so put it back."""
    scheme = {"s3": "s3://", "gcs": "gs://", "hdfs": "hdfs://", "abfs": "abfs://"}.get(getattr(ckpt.filesystem, "type_name", "local"), "")
    return scheme + ckpt.path if scheme and "://" not in ckpt.path else ckpt.path


def best_checkpoint(result) -> tuple[str, dict]:
    """Path/URI and metrics of the best checkpoint by validation BLEU (else the latest)."""
    candidates = [(c, m) for c, m in (result.best_checkpoints or []) if m.get("valid_bleu") is not None]
    if candidates:
        ckpt, metrics = max(candidates, key=lambda cm: (cm[1]["valid_bleu"], cm[1].get("step", 0)))
        return checkpoint_uri(ckpt), metrics
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    return checkpoint_uri(result.checkpoint), result.metrics or {}

