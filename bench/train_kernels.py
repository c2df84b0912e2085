"""The CPU training kernels of job/ against what they replace, side by side.

1. output layer + label-smoothed cross-entropy, forward + backward, 1 thread, N = 1,100 target
   tokens, D = 256: F.linear + F.cross_entropy vs model.linear_cross_entropy, V = 4k / 8k / 32k;
2. dropout (p = 0.2) on 2,400 x 256, forward + backward: F.dropout vs model.Dropout;
3. a whole training step (job.training.worker.train_step, the OpenNMT-comparable model, 1 thread)
in a
   fresh process with glibc's defaults vs with device.keep_freed_memory();
4. the gradient all-reduce between 2 processes, 10 MB (default model) and 33 MB (OpenNMT-
   comparable): gloo vs distributed.SharedMemoryAllReduce;
5. DDP waiting on the bundled corpus's real batches (2 ranks, each on its half): the share of a
   step spent waiting for the slower rank, as sum(max)/sum(mean) - 1 over batch costs, with
   independent shuffles vs batching.cost_matched_order.

    .venv/bin/python bench/train_kernels.py [--no-record]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import ROOT, append_section
from train_throughput import ONMT

sys.path.insert(0, str(ROOT))
from job.model.batching import batch_cost, bucket, cost_matched_order
from job.model.seq2seq import Dropout, linear_cross_entropy


def timed(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1000


def output_layer(v: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(v)
    x = torch.randn(1100, 256, generator=g, requires_grad=True)
    w = (torch.randn(v, 256, generator=g) * 0.05).requires_grad_()
    b = torch.zeros(v, requires_grad=True)
    t = torch.randint(0, v, (1100,), generator=g)

    def torch_path():
        F.cross_entropy(F.linear(x, w, b), t, reduction="sum", label_smoothing=0.1).backward()

    def chunked():
        linear_cross_entropy(x, w, b, t, 0.1).backward()

    reps = max(5, 40 * 4000 // v)
    return timed(torch_path, reps), timed(chunked, reps)


def dropout() -> tuple[float, float]:
    x = torch.randn(2400, 256, requires_grad=True)
    ours = Dropout(0.2).train()
    return timed(lambda: F.dropout(x, 0.2, True).sum().backward(), 50), timed(
        lambda: ours(x).sum().backward(), 50
    )


STEP = r"""
import sys, time, csv, numpy as np, torch
sys.path.insert(0, {root!r})
from job.model.batching import chunk_batches, flatten
from job.config import load_config
from job.model.device import Precision, keep_freed_memory
from job.model.seq2seq import build_model
from job.training.step import train_step
from job.corpus.vocab import build_vocab
if {tuned}:
    keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
cfg = load_config({root!r} + "/configs/sample.yaml", {overrides!r})
rows = list(csv.DictReader(open({root!r} + "/data/sample/train.csv", encoding="utf-8")))[:20000]
vocab = build_vocab(cfg.vocab, [([r["source"] for r in rows], [r["target"] for r in rows])])
sv, so = flatten(vocab.encode_src([r["source"] for r in rows]))
tv, to = flatten(vocab.encode_tgt([r["target"] for r in rows]))
model = build_model(cfg.model, vocab.src_size, vocab.tgt_size).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
batches = list(chunk_batches(sv, so, tv, to, cfg.train.batch_tokens, np.random.default_rng(0)))
fp32 = Precision("fp32", "cpu")
for b in batches[:5]:
    train_step(model, opt, [b], cfg.train, "cpu", fp32, 1.0 / b.tgt_tokens)
start, tokens = time.perf_counter(), 0
for b in batches[5:65]:
    train_step(model, opt, [b], cfg.train, "cpu", fp32, 1.0 / b.tgt_tokens)
    tokens += b.src_tokens + b.tgt_tokens
print(tokens / (time.perf_counter() - start))
"""


def train_step(tuned: bool) -> float:
    code = STEP.format(root=str(ROOT), tuned=tuned, overrides=ONMT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _allreduce_worker(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    from job.training.distributed import SharedMemoryAllReduce

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for mb in (10, 33):
        buf = torch.randn(mb * 2**20 // 4)
        shared = SharedMemoryAllReduce.create(buf.numel())
        gloo = timed(lambda buf=buf: dist.all_reduce(buf), 20)
        shm = timed(lambda buf=buf, shared=shared: shared.all_reduce_mean(buf), 20)
        if rank == 0:
            out.put((mb, gloo, shm))
    dist.destroy_process_group()


def allreduce() -> list[tuple[int, float, float]]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_allreduce_worker, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in range(2)]
    for p in procs:
        p.join()
    return results


def ddp_waiting() -> tuple[float, float]:
    """Batch costs of the bundled corpus split in two like the training shards (sentencepiece-free
    proxy: whitespace words + 1 per side, the budget 2,500), 5 epochs."""
    with open(ROOT / "data" / "sample" / "train.csv", encoding="utf-8", newline="") as f:
        rows = [
            (len(r["source"].split()) + 1, len(r["target"].split()) + 1) for r in csv.DictReader(f)
        ]
    lens = np.array(rows)
    waits = {"shuffled": [], "matched": []}
    for epoch in range(5):
        costs, orders = [], {"shuffled": [], "matched": []}
        for rank in range(2):
            rng = np.random.default_rng([1, rank, epoch])
            src, tgt = lens[rank::2, 0], lens[rank::2, 1]
            batches = bucket(src, tgt, 2500, rng)
            c = np.array([batch_cost(src, tgt, b) for b in batches], dtype=float)
            costs.append(c)
            orders["shuffled"].append(rng.permutation(len(c)))
            orders["matched"].append(
                cost_matched_order(c, np.random.default_rng([1, 7, epoch]), rng)
            )
        for kind, order in orders.items():
            steps = min(map(len, order))
            per_step = np.stack([c[o][:steps] for c, o in zip(costs, order)])
            waits[kind].append(per_step.max(0).sum() / per_step.mean(0).sum() - 1)
    return float(np.mean(waits["shuffled"])), float(np.mean(waits["matched"]))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result: dict = {}
    lines = ["| kernel | before | after | ratio |", "|---|---|---|---|"]

    def record(
        key: str, label: str, before: float, after: float, unit: str, digits: int, speedup: float
    ) -> None:
        """One comparison: into the JSON result (rounded), the table, and the console."""
        result[key] = [round(before, digits or None), round(after, digits or None)]
        lines.append(
            f"| {label} | {before:,.{digits}f}{unit} | {after:,.{digits}f}{unit} | {speedup:.2f}x |"
        )
        print(lines[-1], flush=True)

    for v in (4000, 8000, 32000):
        before, after = output_layer(v)
        record(
            f"output_layer_v{v}_ms",
            f"output layer + loss, fwd + bwd, V = {v:,} (torch vs chunked)",
            before,
            after,
            " ms",
            1,
            before / after,
        )
    before, after = dropout()
    record(
        "dropout_ms",
        "dropout 2,400 x 256, fwd + bwd (F.dropout vs Dropout)",
        before,
        after,
        " ms",
        2,
        before / after,
    )
    before, after = train_step(False), train_step(True)
    record(
        "train_step_tokens_per_s",
        "OpenNMT-comparable training step, 1 thread (glibc default vs keep_freed_memory)",
        before,
        after,
        " tok/s",
        0,
        after / before,
    )
    for mb, gloo, shm in sorted(allreduce()):
        record(
            f"allreduce_{mb}mb_ms",
            f"all-reduce {mb} MB, 2 processes (gloo vs SharedMemoryAllReduce)",
            gloo,
            shm,
            " ms",
            1,
            gloo / shm,
        )
    shuffled, matched = ddp_waiting()
    lines.append(
        "| DDP waiting for the slower rank, share of step cost "
        "(independent shuffles vs cost-matched order) "
        f"| {shuffled * 100:.1f}% | {matched * 100:.1f}% | |"
    )
    result["ddp_waiting_share"] = [round(shuffled, 4), round(matched, 4)]
    print(lines[-1], flush=True)
    if not args.no_record:
        append_section(
            "Training kernels (CPU)",
            "python bench/train_kernels.py",
            "\n".join(lines) + "\n\n```json\n" + json.dumps(result) + "\n```",
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
