"""Training throughput on the bundled corpus, all measured in one run, side by side.

(a) the seed's training loop made runnable (its blog post's code + embeddings: 1-layer LSTM 256,
    no attention, word vocabularies of 5,000 per side, padded batches of 32, teacher forcing 0.5,
    per-step decoder loop, no masking), in-process with 2 threads;
(b) this project at the seed's architecture and vocabulary (word 5k/side, 1-layer uni LSTM 256,
    embeddings 256, no attention), 1 worker x 2 threads;
(c) the default model (configs/sample.yaml), 2 workers x 1 thread;
(d) the default model, 1 worker x 2 threads (compare with c);
(e) an OpenNMT-py-comparable model: word vocabularies 8k/side, bi-LSTM 2 x 128, decoder 256,
    attention, 2 workers x 1 thread;
(f) OpenNMT-py 3.5.1 itself at the issue's settings (same model plus input feeding, batches of
    64 sentences), one process, when .venv-onmt exists (`make bench-onmt`).

(b)-(e) are the real `python -m job train` on a local Ray cluster; their tokens/s come from
metrics.jsonl (first-epoch intervals after WARMUP_S of training, so neither start-up nor
validation is inside a window). Tokens are real source + target tokens (EOS included), never
padding. MFU = model FLOPs per second / the fp32 matrix-multiply peak, sampled before, between
and after the runs; the best sample is used (this VM's rate moves by up to a third from minute
to minute; the best gives the lower, safer MFU). BENCHMARKS.md has the FLOP formula.

    make bench-onmt    # once, for (f)
    .venv/bin/python bench/train_throughput.py [--seconds 75] [--no-record]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from common import ROOT, append_section, run_cli

TRAIN = ROOT / "data" / "sample" / "train.csv"


# ----------------------------------------------------------------------------- matmul peak


def matmul_peak(threads: int = 2, seconds: float = 6.0, rounds: int = 3) -> float:
    """The best fp32 torch.mm rate (GFLOP/s) over n = 512, 1024, 2048, sampled `rounds` times.

    A shared VM's rate moves from minute to minute (72-180 GFLOP/s within 90 minutes here), and a
    low sample would inflate every MFU; the best of several is the peak this machine can reach.
    """
    torch.set_num_threads(threads)
    best = 0.0
    for _ in range(rounds):
        for n in (512, 1024, 2048):
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds / 3:
                torch.mm(a, b)
                reps += 1
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


# ----------------------------------------------------------------------------- (a) the seed


class SeedEncoder(nn.Module):
    def __init__(self, vocab, emb, hidden, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)  # added: the seed fed raw ids to the LSTM
        self.lstm = nn.LSTM(emb, hidden, layers)

    def forward(self, x):
        _, (h, c) = self.lstm(self.embed(x))
        return h, c


class SeedDecoder(nn.Module):
    def __init__(self, vocab, emb, hidden, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x, h, c):
        out, (h, c) = self.lstm(self.embed(x), (h, c))
        return self.fc(out), h, c


class SeedSeq2Seq(nn.Module):
    def __init__(self, enc, dec):
        super().__init__()
        self.encoder, self.decoder = enc, dec

    def forward(self, src, tgt, teacher_forcing_ratio=0.5):
        T, B = tgt.shape
        outputs = torch.zeros(T, B, self.decoder.fc.out_features)
        h, c = self.encoder(src)
        inp = tgt[0, :]
        for t in range(1, T):
            out, h, c = self.decoder(inp.unsqueeze(0), h, c)
            outputs[t] = out.squeeze(0)
            top1 = out.squeeze(0).argmax(1)
            inp = tgt[t] if torch.rand(1) < teacher_forcing_ratio else top1
        return outputs


def _read_pairs():
    with open(TRAIN, encoding="utf-8", newline="") as f:
        return [(r["source"].split(), r["target"].split()) for r in csv.DictReader(f)]


def seed_loop(seconds: float) -> dict:
    """The seed's loop: torchtext-style Fields (vocab 5,000 + specials),
    BucketIterator batches of 32."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    pairs = [(s, t) for s, t in _read_pairs() if s and t]

    def vocab(side):
        counts = Counter(w for p in pairs for w in p[side])
        words = ["<unk>", "<pad>", "<sos>", "<eos>"] + [w for w, _ in counts.most_common(5000)]
        return {w: i for i, w in enumerate(words)}

    sv, tv = vocab(0), vocab(1)
    enc = SeedEncoder(len(sv), 256, 256, 1)
    dec = SeedDecoder(len(tv), 256, 256, 1)
    model = SeedSeq2Seq(enc, dec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()  # the seed: padding is not ignored
    rng = random.Random(0)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    rng.shuffle(batches)

    def tensor(rows, side, index, bos_eos):
        seqs = [
            ([index["<sos>"]] if bos_eos else [])
            + [index.get(w, 0) for w in pairs[r][side]]
            + ([index["<eos>"]] if bos_eos else [])
            for r in rows
        ]
        out = torch.full((max(map(len, seqs)), len(seqs)), index["<pad>"])
        for j, s in enumerate(seqs):
            out[: len(s), j] = torch.tensor(s)
        return out, sum(map(len, seqs))

    tokens, steps, start, warm = 0, 0, None, 3
    for rows in batches:
        src, ns = tensor(rows, 0, sv, False)
        tgt, nt = tensor(rows, 1, tv, True)
        opt.zero_grad()
        out = model(src, tgt)
        loss = crit(out[1:].reshape(-1, out.shape[-1]), tgt[1:].reshape(-1))
        loss.backward()
        opt.step()
        steps += 1
        if steps == warm:
            start = time.perf_counter()
        elif steps > warm:
            tokens += (
                ns + nt - 1
            )  # source words + target words + EOS (the seed's BOS is input only)
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    return {
        "tokens_per_s": tokens / elapsed,
        "pairs_per_s": (steps - warm) * 32 / elapsed,
        "seconds": round(elapsed, 1),
    }


# ----------------------------------------------------------------------------- (b)-(e) the project


def flops_per_token(
    cfg: dict, vocab_src: int, vocab_tgt: int, src_len: float, tgt_len: float
) -> float:
    """Training FLOPs (3 x forward matmul FLOPs) per real token, for mean real lengths
    (EOS incl.)."""
    m = cfg["model"]
    E, H, L = m["embedding_dim"], m["hidden_size"], m["num_layers"]
    dirs = 2 if m["bidirectional"] else 1
    h = H // dirs
    enc = sum(dirs * 2 * 4 * h * ((E if i == 0 else H) + h) for i in range(L))  # per source token
    dec = sum(2 * 4 * H * ((E if i == 0 else H) + H) for i in range(L))  # per target token
    attn = m["attention"] != "none"
    out_dim = E if m["tie_embeddings"] else H
    per_src = enc + (2 * H * H if attn else 0)  # + attention keys
    per_tgt = (
        dec + 2 * out_dim * vocab_tgt + ((2 * 2 * src_len * H + 2 * 2 * H * out_dim) if attn else 0)
    )
    return 3 * (per_src * src_len + per_tgt * tgt_len) / (src_len + tgt_len)


WARMUP_S = 20.0  # training seconds left out of every measurement (first chunk, allocator warm-up)


def project_run(label: str, overrides: list[str], seconds: float, workdir: Path) -> dict:
    name = f"tp-{label}"
    summary = run_cli(
        "train",
        "--set",
        f"storage_path={workdir}",
        f"name={name}",
        "train.epochs=1",
        f"train.max_minutes={(seconds + WARMUP_S + 5) / 60}",
        "train.log_every_steps=10",
        "data.test=null",
        "train.average_last=0",
        *overrides,
    )
    run_dir = Path(summary["run_dir"])
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    train = [r for r in rows if "train_loss" in r and r["epoch"] < 1]
    after = [r for r in train if r["elapsed_s"] >= WARMUP_S]
    if len(after) < 2:
        raise SystemExit(
            f"{label}: fewer than two logging intervals after {WARMUP_S:g} s of training"
        )
    a, b = after[0], after[-1]
    tokens = (b["src_tokens"] + b["tgt_tokens"]) - (a["src_tokens"] + a["tgt_tokens"])
    src_share = b["src_tokens"] / (b["src_tokens"] + b["tgt_tokens"])
    cfg = __import__("yaml").safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    vocab = json.loads((run_dir / "vocab" / "vocab.json").read_text(encoding="utf-8"))
    vs = vocab.get("size") or len(vocab["src"])
    vt = vocab.get("size") or len(vocab["tgt"])
    used = summary["data"]["train"]["used"]
    total = (
        b["src_tokens"] / max(b["epoch"], 1e-9) / used,
        b["tgt_tokens"] / max(b["epoch"], 1e-9) / used,
    )
    tps = tokens / (b["elapsed_s"] - a["elapsed_s"])
    fpt = flops_per_token(cfg, vs, vt, total[0], total[1])
    return {
        "tokens_per_s": tps,
        "pairs_per_s": tps / (total[0] + total[1]),
        "flops_per_token": fpt,
        "gflops": tps * fpt / 1e9,
        "src_share": src_share,
        "mean_src_len": total[0],
        "mean_tgt_len": total[1],
        "seconds": round(b["elapsed_s"] - a["elapsed_s"], 1),
    }


# ----------------------------------------------------------------------------- (f) OpenNMT-py

ONMT_PYTHON = ROOT / ".venv-onmt" / "bin" / "python"  # make bench-onmt
ONMT_CONFIG = """\
save_data: {work}/onmt
src_vocab: {work}/vocab.src
tgt_vocab: {work}/vocab.tgt
overwrite: true
data:
  corpus_1: {{path_src: {work}/src.txt, path_tgt: {work}/tgt.txt}}
src_vocab_size: 8000
tgt_vocab_size: 8000
src_seq_length: 128
tgt_seq_length: 128
encoder_type: brnn
decoder_type: rnn
rnn_type: LSTM
layers: 2
hidden_size: 256
word_vec_size: 256
global_attention: general
input_feed: 1
dropout: [0.2]
batch_size: 64
batch_type: sents
bucket_size: 20000
num_workers: 0
optim: adam
learning_rate: 0.002
train_steps: 1000000
valid_steps: 1000000
save_checkpoint_steps: 1000000
report_every: 10
seed: 1
"""
ONMT_STEP = re.compile(r"^\[(\S+ \S+) INFO\] Step (\d+)/.*?sents:\s*(\d+);.*?(\d+)/\s*(\d+) tok/s")


def onmt_py_run(seconds: float, workdir: Path, python: Path) -> dict:
    """OpenNMT-py 3.5.1 as the issue measured it: bi-LSTM 2 x 128, decoder 2 x 256, general
    attention with input feeding, word vocabularies 8k/side, batches of 64 sentences from
    length-sorted buckets, in one process with torch's default threads (all cores). Trained on the
    same corpus until `seconds` have been measured after WARMUP_S; pairs/s from its own report
    lines and their timestamps, tokens/s as it reports them (source + target)."""
    work = workdir / "onmt"
    work.mkdir()
    with open(work / "src.txt", "w") as s, open(work / "tgt.txt", "w") as t:
        for src, tgt in _read_pairs():
            if src and tgt:
                s.write(" ".join(src) + "\n")
                t.write(" ".join(tgt) + "\n")
    (work / "onmt.yaml").write_text(ONMT_CONFIG.format(work=work))
    bin_dir = python.parent
    subprocess.run(
        [str(bin_dir / "onmt_build_vocab"), "-config", str(work / "onmt.yaml"), "-n_sample", "-1"],
        check=True,
        capture_output=True,
        cwd=work,
    )
    proc = subprocess.Popen(
        [str(bin_dir / "onmt_train"), "-config", str(work / "onmt.yaml")],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reports = []  # (time, step, sentences in the interval, src tok/s, tgt tok/s)
    try:
        for line in proc.stdout:
            m = ONMT_STEP.match(line)
            if not m:
                continue
            when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            reports.append(
                (when, int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
            )
            if reports[-1][0] - reports[0][0] >= WARMUP_S + seconds:
                break
    finally:
        proc.kill()
        proc.wait()
    after = [r for r in reports if r[0] - reports[0][0] >= WARMUP_S] if reports else []
    if len(after) < 2:
        raise SystemExit(
            f"OpenNMT-py: fewer than two report lines after {WARMUP_S:g} s ({len(reports)} in all)"
        )
    elapsed = after[-1][0] - after[0][0]
    pairs = sum(r[2] for r in after[1:])
    return {
        "pairs_per_s": pairs / elapsed,
        "onmt_reported_tokens_per_s": sum(r[3] + r[4] for r in after[1:]) / len(after[1:]),
        "steps": after[-1][1] - after[0][1],
        "seconds": round(elapsed, 1),
    }


SEED_ARCH = [
    "vocab.type=word",
    "vocab.vocab_size=5000",
    "model.attention=none",
    "model.bidirectional=false",
    "model.hidden_size=256",
    "model.embedding_dim=256",
    "model.num_layers=1",
    "model.tie_embeddings=false",
    "model.share_embeddings=false",
]
ONMT = [
    "vocab.type=word",
    "vocab.vocab_size=8000",
    "model.attention=luong",
    "model.bidirectional=true",
    "model.hidden_size=256",
    "model.embedding_dim=256",
    "model.num_layers=2",
    "model.tie_embeddings=false",
    "model.share_embeddings=false",
]
ONE_BY_TWO = ["scaling.num_workers=1", "scaling.cpus_per_worker=2"]


# The issue's numbers, from a machine where the seed loop ran at 6,383 tokens/s and OpenNMT-py at
# 535 pairs/s: 800 pairs/s there is 1.50x OpenNMT-py. Machines differ (the AMD EPYC VM of
# 2026-11-29 ran the seed loop at a third to a half of that speed), so the pairs/s target is
# judged as that ratio, against OpenNMT-py measured in the same run.
ISSUE_ONMT_PY_PAIRS_PER_S, ISSUE_TARGET_PAIRS_PER_S = 535.0, 800.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seconds", type=float, default=75.0, help="measured seconds per configuration"
    )
    ap.add_argument(
        "--onmt-python",
        type=Path,
        default=ONMT_PYTHON,
        help="python of a venv with OpenNMT-py 3.5.1 (make bench-onmt); (f) is skipped without one",
    )
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    peaks = [matmul_peak()]
    print(f"[bench] fp32 matmul peak: {peaks[0]:.1f} GFLOP/s (2 threads)", flush=True)
    seed = seed_loop(args.seconds)
    print(f"[bench] (a) seed loop: {seed}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {
            "b_seed_arch_1x2": project_run("seed-arch", SEED_ARCH + ONE_BY_TWO, args.seconds, work),
            "c_default_2x1": project_run("default", [], args.seconds, work),
            "d_default_1x2": project_run("default-1x2", ONE_BY_TWO, args.seconds, work),
            "e_onmt_2x1": project_run("onmt", ONMT, args.seconds, work),
        }
        peaks.append(matmul_peak())
        onmt_py = None
        if args.onmt_python.exists():
            onmt_py = onmt_py_run(args.seconds, work, args.onmt_python)
            print(f"[bench] (f) OpenNMT-py 3.5.1: {onmt_py}", flush=True)
        else:
            print(
                f"[bench] (f) skipped: no OpenNMT-py at {args.onmt_python} (make bench-onmt)",
                flush=True,
            )
    peaks.append(matmul_peak())
    peak = max(peaks)
    print(
        f"[bench] fp32 matmul peak samples {[round(p, 1) for p in peaks]}; using {peak:.1f}",
        flush=True,
    )
    for k, v in runs.items():
        v["mfu"] = v["gflops"] / peak
        print(f"[bench] {k}: {v}", flush=True)
    e = runs["e_onmt_2x1"]
    result = {
        "seed_tokens_per_s": round(seed["tokens_per_s"], 1),
        "seed_arch_tokens_per_s": round(runs["b_seed_arch_1x2"]["tokens_per_s"], 1),
        "speedup_vs_seed": round(runs["b_seed_arch_1x2"]["tokens_per_s"] / seed["tokens_per_s"], 2),
        "default_tokens_per_s": round(runs["c_default_2x1"]["tokens_per_s"], 1),
        "default_1x2_tokens_per_s": round(runs["d_default_1x2"]["tokens_per_s"], 1),
        "matmul_peak_gflops": round(peak, 1),
        "matmul_peak_samples": [round(p, 1) for p in peaks],
        "mfu": round(runs["c_default_2x1"]["mfu"], 3),
        "onmt_comparable_pairs_per_s": round(e["pairs_per_s"], 1),
        "onmt_comparable_tokens_per_s": round(e["tokens_per_s"], 1),
        "onmt_py_pairs_per_s": round(onmt_py["pairs_per_s"], 1) if onmt_py else None,
        "onmt_comparable_vs_onmt_py": round(e["pairs_per_s"] / onmt_py["pairs_per_s"], 2)
        if onmt_py
        else None,
        "target_vs_onmt_py": round(ISSUE_TARGET_PAIRS_PER_S / ISSUE_ONMT_PY_PAIRS_PER_S, 2),
    }
    if not args.no_record:

        def row(label, r, note=""):
            ratio = r["tokens_per_s"] / seed["tokens_per_s"]
            mfu = f"{r['mfu'] * 100:.1f}%" if "mfu" in r else "—"
            return (
                f"| {label} | {r['tokens_per_s']:,.0f} | {r['pairs_per_s']:,.0f} "
                f"| {ratio:.2f}x | {mfu} | {note} |"
            )

        lines = [
            f"fp32 matmul peak measured in the same run: **{peak:.1f} GFLOP/s** "
            "(torch.mm, n = 512-2048, 2 threads; "
            "the best of three samples of 6 s: before, between and after the runs: "
            f"{', '.join(f'{p:.1f}' for p in peaks)}).",
            "",
            "| configuration | tokens/s (src + tgt, real) | pairs/s | vs seed | MFU | note |",
            "|---|---|---|---|---|---|",
            row(
                "(a) seed loop made runnable, 2 threads", seed, "per-step decoder, tf 0.5, batch 32"
            ),
            row("(b) project, seed architecture, 1 worker x 2 threads", runs["b_seed_arch_1x2"]),
            row("(c) project, default model, 2 workers x 1 thread", runs["c_default_2x1"]),
            row("(d) project, default model, 1 worker x 2 threads", runs["d_default_1x2"]),
            row("(e) project, OpenNMT-comparable, 2 workers x 1 thread", e),
        ]
        if onmt_py:
            lines.append(
                "| (f) OpenNMT-py 3.5.1, same model with input feeding, batch 64, "
                "1 process x 2 threads | "
                f"{onmt_py['onmt_reported_tokens_per_s']:,.0f} (its own count) "
                f"| {onmt_py['pairs_per_s']:,.0f} | | | "
                f"(e) / (f) = **{result['onmt_comparable_vs_onmt_py']:.2f}x** pairs/s "
                f"(target {result['target_vs_onmt_py']:.2f}x) |"
            )
        lines += [
            "",
            "Each project row: `python -m job train` on a local Ray cluster, "
            "tokens/s from metrics.jsonl over "
            f"the first epoch's logging intervals after {WARMUP_S:g} s of training "
            f"(b: {runs['b_seed_arch_1x2']['seconds']} s, "
            f"c: {runs['c_default_2x1']['seconds']} s, "
            f"d: {runs['d_default_1x2']['seconds']} s, e: {e['seconds']} s measured).",
            "",
            "FLOPs per real token (training = 3 x forward; E embedding, H hidden, h = H/dirs, "
            "V target vocab, "
            "S/T mean real source/target lengths incl. EOS): "
            "encoder per source token sum over layers of "
            "dirs x 8h(in + h), + 2H^2 attention keys; "
            "decoder per target token 8H(in + H) per layer, + 2 x out x V "
            "output layer, + 4SH + 4H x out attention (scores, context, combine); "
            "per token = 3 x (src_cost x S + tgt_cost x T) / (S + T). "
            "Padding is never counted: the batches are "
            "length-bucketed and the output layer runs on real positions only.",
            "",
            "```json",
            json.dumps(result),
            "```",
        ]
        append_section(
            "Training throughput",
            f"python bench/train_throughput.py --seconds {args.seconds:g}",
            "\n".join(lines),
        )
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
