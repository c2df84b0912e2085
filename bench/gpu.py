"""One command for anyone with one GPU: the GPU path measured end to end on the bundled corpus.

(a) module dtypes: one training forward of the default model on the GPU under each precision
    (train.precision fp32 / bf16 / fp16), the output dtype of every LSTM and Linear recorded
    (under bf16 the LSTMs must run in bf16, not the fp16 that autocast gives cuDNN RNNs);
(b) MINUTES of training per precision (1 worker, `--set scaling.use_gpu=true`), tokens/s from
    metrics.jsonl after WARMUP_S, MFU = tokens/s x training FLOPs per token (the formula of
    bench/train_throughput.py) / the GPU's dense peak for that dtype (PEAKS, from the vendor's
    data sheets; unknown GPUs get no MFU), the GPU memory high-water mark;
(c) a kill and resume: bf16 with step checkpoints, the worker SIGKILLed after a step checkpoint
    is registered, restarted (the fused AdamW state must be on the GPU after the restart), the
    steps lost and the seconds to the first step after it, each row once per epoch
    (bench/long_runs.kill_run);
(d) bulk translation of the test split with `translate --gpu` (beam 5), rows/s.

Results are appended to BENCHMARKS.md. About 10 minutes on one GPU with the defaults.

    .venv/bin/python bench/gpu.py [--minutes 1.5] [--precisions fp32,bf16,fp16] [--no-record]
    .venv/bin/python bench/gpu.py --cpu-smoke   # the script's own plumbing, on CPU, in ~3 min
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, append_section, run_cli
from long_runs import kill_run, rows_of
from train_throughput import project_run

sys.path.insert(0, str(ROOT))

# Dense (no sparsity) peak FLOP/s per dtype; fp32 is the non-tensor-core rate (cuDNN may use
# TF32 tensor cores for fp32 RNNs: torch.backends.cudnn.allow_tf32 is on by default).
PEAKS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},  # SXM; PCIe is ~25% lower
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12},
    "A10G": {"bf16": 70e12, "fp16": 70e12, "fp32": 31.2e12},
}


def peak_for(name: str, precision: str) -> float | None:
    for key, peaks in PEAKS.items():
        if key in name:
            return peaks[precision]
    return None


def module_dtypes(device: torch.device) -> dict:
    """(a): {precision: {module kind: output dtypes}} for one training forward."""
    from job.config import load_config
    from job.model.batching import chunk_batches, flatten
    from job.model.device import Precision
    from job.model.seq2seq import build_model

    cfg = load_config(ROOT / "configs" / "sample.yaml")
    model = build_model(cfg.model, 4000, 4000).to(device)
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, 4000, (int(n),), generator=gen).tolist() for n in range(5, 45)]
    sv, so = flatten(rows)
    batch = next(iter(chunk_batches(sv, so, sv, so, 4000, np.random.default_rng(0))))
    b = batch.to(device)
    out: dict = {}
    for name in ("fp32", "bf16", "fp16"):
        seen: dict[str, set] = {}

        def hook(module, _inputs, output, seen=seen):
            first = output[0] if isinstance(output, tuple) else output
            if isinstance(first, torch.nn.utils.rnn.PackedSequence):
                first = first.data
            if isinstance(first, torch.Tensor):
                seen.setdefault(type(module).__name__, set()).add(str(first.dtype))

        handles = [
            m.register_forward_hook(hook)
            for m in model.modules()
            if isinstance(m, (torch.nn.LSTM, torch.nn.Linear))
        ]
        with Precision(name, device).autocast():
            loss, _ = model(b.src, b.src_len, b.tgt_in, b.tgt_out, 0.1, 1.0,
                            positions=b.tgt_positions)  # fmt: skip
        loss.backward()
        grads = {str(p.grad.dtype) for p in model.parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        for h in handles:
            h.remove()
        out[name] = {**{k: sorted(v) for k, v in seen.items()}, "loss": str(loss.dtype),
                     "grads": sorted(grads)}  # fmt: skip
    return out


def training(precision: str, minutes: float, work: Path, gpu: bool, name: str) -> dict:
    """(b): tokens/s, MFU, memory for one precision."""
    extra = [f"train.precision={precision}", "scaling.num_workers=1"]
    if gpu:
        extra += ["scaling.use_gpu=true", "train.batch_tokens=12000", "translate.batch_size=256"]
    else:
        extra += ["scaling.cpus_per_worker=2"]
    out = project_run(f"gpu-{precision}", extra, minutes * 60, work)
    rows = rows_of(work / f"tp-gpu-{precision}" / "metrics.jsonl")
    memory = max((r.get("max_memory_gb", 0) for r in rows), default=0)
    peak = peak_for(name, precision) if gpu else None
    return {
        "tokens_per_s": round(out["tokens_per_s"]),
        "tflops": round(out["gflops"] / 1e3, 2),
        "mfu": round(out["gflops"] * 1e9 / peak, 4) if peak else None,
        "max_memory_gb": memory,
        "seconds": out["seconds"],
    }


def translation(work: Path, gpu: bool) -> dict:
    """(d): bulk translation of the test split with the bf16 run's checkpoint."""
    run = work / "tp-gpu-bf16"
    checkpoints = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
    if not checkpoints:
        return {"skipped": "no bf16 checkpoint"}
    t0 = time.perf_counter()
    summary = run_cli(
        "translate", "--checkpoint", str(checkpoints[-1]), "--input",
        str(ROOT / "data" / "sample" / "test.csv"), "--output", str(work / "test-out.csv"),
        "--beam", "5", *(["--gpu"] if gpu else []),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    rows = summary.get("rows", 0)
    return {"rows": rows, "seconds_with_startup": round(seconds, 1),
            "rows_per_s_with_startup": round(rows / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.5)
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--cpu-smoke", action="store_true", help="run the plumbing on CPU")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    gpu = not args.cpu_smoke
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA device here (use --cpu-smoke to test the script)")
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    device = torch.device("cuda" if gpu else "cpu")
    precisions = args.precisions.split(",") if gpu else ["fp32", "bf16"]
    minutes = args.minutes if gpu else 0.5
    results: dict = {"device": name, "dtypes": module_dtypes(device)}
    print(json.dumps(results["dtypes"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        results["training"] = {p: training(p, minutes, work, gpu, name) for p in precisions}
        results["translate"] = translation(work, gpu)
        kill_extra = ["train.precision=bf16", "scaling.num_workers=1"]
        kill_extra += ["scaling.use_gpu=true", "train.batch_tokens=12000"] if gpu else []
        results["kill"] = kill_run(work, minutes * 60, kill_extra, every=200 if gpu else 20)
    print(json.dumps(results), flush=True)
    if args.no_record or not gpu:
        return
    lines = ["| precision | tokens/s | TFLOP/s | MFU | GPU memory, GB |", "|---|---|---|---|---|"]
    for p, r in results["training"].items():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        lines.append(
            f"| {p} | {r['tokens_per_s']:,} | {r['tflops']} | {mfu} | {r['max_memory_gb']} |"
        )
    append_section(
        f"GPU path: precisions, a kill and resume, bulk translation ({name})",
        f"bench/gpu.py --minutes {args.minutes:g} --precisions {args.precisions}",
        "\n".join(lines) + f"\n\n```json\n{json.dumps(results)}\n```",
    )


if __name__ == "__main__":
    main()
