"""`python -m job report RUN_DIR`: training curves, attention heat maps and a Markdown summary.

Writes into RUN_DIR/report/: loss.png, perplexity.png, bleu.png, lr.png, throughput.png,
attention.png and summary.md. Needs matplotlib (in requirements.lock; extra `report`).
"""

from __future__ import annotations

import json
import os

import yaml

from job import storage
from job.errors import ReportError
from job.metrics import improves, read_rows


def _plot(
    path: str,
    title: str,
    ylabel: str,
    series: list[tuple[str, list, list, str]],
    logy: bool = False,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, xs, ys, style in series:
        if xs:
            ax.plot(xs, ys, style, label=label)
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if any(xs for _, xs, _, _ in series):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(rows: list[dict], out_dir: str) -> list[str]:
    train = [r for r in rows if "train_loss" in r]
    valid = [r for r in rows if "valid_loss" in r and not r.get("averaged")]

    def col(rs: list[dict], k: str) -> tuple[list, list]:
        """(steps, values) of the rows that have `k`."""
        return [r["step"] for r in rs if r.get(k) is not None], [
            r[k] for r in rs if r.get(k) is not None
        ]

    made = []
    specs = [
        (
            "loss.png",
            "Loss per target token",
            "cross-entropy (train: label-smoothed)",
            [
                ("train", *col(train, "train_loss"), "-"),
                ("validation", *col(valid, "valid_loss"), "o-"),
            ],
            False,
        ),
        (
            "perplexity.png",
            "Perplexity",
            "perplexity (log scale)",
            [
                ("train", *col(train, "train_ppl"), "-"),
                ("validation", *col(valid, "valid_ppl"), "o-"),
            ],
            True,
        ),
        (
            "bleu.png",
            "Validation BLEU and chrF (greedy)",
            "score",
            [("BLEU", *col(valid, "valid_bleu"), "o-"), ("chrF", *col(valid, "valid_chrf"), "s--")],
            False,
        ),
        ("lr.png", "Learning rate", "learning rate", [("lr", *col(train, "lr"), "-")], False),
        (
            "throughput.png",
            "Training throughput (all workers)",
            "tokens/s (source + target)",
            [("tokens/s", *col(train, "tokens_per_s"), "-")],
            False,
        ),
    ]
    for name, title, ylabel, series, logy in specs:
        path = os.path.join(out_dir, name)
        _plot(path, title, ylabel, series, logy)
        made.append(path)
    return made


def plot_attention(checkpoint: str, sentences: list[str], path: str) -> str | None:
    """Heat maps (target tokens x source tokens) of greedy translations of a few sentences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from job.inference.translator import Translator
    from job.model.batching import flatten, pad
    from job.model.search import greedy, max_output_length

    t = Translator.from_checkpoint(checkpoint, device="cpu")
    if t.model.decoder.attention is None or not sentences:
        return None
    fig, axes = plt.subplots(
        len(sentences), 1, figsize=(9, 3.6 * len(sentences)), dpi=100, squeeze=False
    )
    for ax, sentence in zip(axes[:, 0], sentences):
        ids = t.vocab.encode_src([sentence])[0][: t.cfg.data.max_length - 1]
        src, src_len = pad(*flatten([ids]), np.array([0]), bos=False, eos=True)
        src_t, len_t = torch.from_numpy(src), torch.from_numpy(src_len)
        out, _, attn = greedy(
            t.model, src_t, len_t, max_output_length(len_t, t.cfg.translate.max_length_ratio)
        )
        out_ids = [i for i in out[0].tolist() if i > 0]
        rows = len(out_ids) + 1  # + EOS step
        weights = attn[0, :rows, : len(ids) + 1].numpy()
        ax.imshow(weights, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        src_labels = [*t.vocab.src_tokens(sentence)[: len(ids)], "</s>"]
        tgt_labels = [*t.vocab.tgt_tokens(out_ids), "</s>"]
        ax.set_xticks(range(len(src_labels)), src_labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(tgt_labels)), tgt_labels, fontsize=8)
        ax.set_xlabel("source tokens")
        ax.set_ylabel("output tokens")
        ax.set_title(f"{sentence[:70]}  →  {t.vocab.decode_tgt([out_ids])[0][:70]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _sample_sentences(cfg: dict, n: int = 4) -> list[str]:
    import csv

    for key in ("valid", "test"):
        path = cfg.get("data", {}).get(key)
        if isinstance(path, str) and os.path.isfile(path) and path.endswith(".csv"):
            col = cfg["data"]["source_column"]
            with open(path, encoding="utf-8", newline="") as f:
                rows = [
                    r[col]
                    for r in csv.DictReader(f)
                    if r.get(col) and 3 <= len(r[col].split()) <= 12
                ]
            return rows[:n]
    return []


def summary_markdown(run_dir: str, rows: list[dict], images: list[str]) -> str:
    cfg = yaml.safe_load(storage.read_text(storage.join(run_dir, "config.yaml")))
    summary_path = storage.join(run_dir, "summary.json")
    summary = json.loads(storage.read_text(summary_path)) if storage.exists(summary_path) else {}
    data_path = storage.join(run_dir, "data.json")
    data = (
        json.loads(storage.read_text(data_path))
        if storage.exists(data_path)
        else summary.get("data", {})
    )
    valid = [r for r in rows if "valid_loss" in r]
    train = [r for r in rows if "train_loss" in r]
    lines = [f"# Run report: {cfg.get('name')}", "", f"Run directory: `{run_dir}`", ""]
    lines += ["## Data", "", "| split | read | used | rejected |", "|---|---|---|---|"]
    for split, d in data.items():
        rej = ", ".join(f"{k} {v}" for k, v in d.get("rejected", {}).items()) or "none"
        lines.append(f"| {split} | {d.get('read')} | {d.get('used')} | {rej} |")
    lines += ["", "## Training", ""]
    if train:
        last = train[-1]
        lines.append(
            f"{last['step']} steps, {last['epoch']:.2f} epochs, {last['elapsed_s']:.0f} s; "
            f"{last['src_tokens'] + last['tgt_tokens']:,} tokens seen; "
            f"final train loss {last['train_loss']:.3f}."
        )
    if valid:
        best = None
        for r in valid:
            if improves(r.get("valid_bleu"), best["valid_bleu"] if best else None):
                best = r
        if best:
            what = (
                f"mean of the last {best['averaged']} checkpoints"
                if best.get("averaged")
                else f"step {best['step']} (epoch {best['epoch']})"
            )
            lines.append(
                f"Best validation BLEU {best['valid_bleu']:.2f} "
                f"(chrF {best.get('valid_chrf', 0):.2f}, "
                f"ppl {best['valid_ppl']:.2f}) at {what}."
            )
    if summary:
        lines += ["", "## Test", ""]
        if summary.get("test_bleu") is not None:
            lines.append(
                f"BLEU **{summary['test_bleu']}**, chrF **{summary['test_chrf']}** "
                f"on {summary.get('test_sentences')} sentences "
                f"(beam {summary.get('test_beam', 1)}); "
                f"`{summary.get('bleu_signature')}`."
            )
        lines.append(f"Best checkpoint: `{summary.get('best_checkpoint')}`.")
    lines += ["", "## Plots", ""] + [
        f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in images
    ]
    lines += [
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(cfg, sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def make_report(run_dir: str, checkpoint: str | None = None) -> dict:
    if storage.is_uri(run_dir):
        raise ReportError(f"report needs a local run directory (copy {run_dir} from storage first)")
    rows = read_rows(run_dir)
    out_dir = os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    images = plot_curves(rows, out_dir)
    cfg = yaml.safe_load(storage.read_text(storage.join(run_dir, "config.yaml")))
    summary_path = os.path.join(run_dir, "summary.json")
    if checkpoint is None and os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            checkpoint = json.load(f).get("best_checkpoint")
    if checkpoint is None:
        ckpts = sorted(d for d in os.listdir(run_dir) if d.startswith("checkpoint_"))
        checkpoint = os.path.join(run_dir, ckpts[-1]) if ckpts else None
    if checkpoint and os.path.isdir(checkpoint):
        attn = plot_attention(
            checkpoint, _sample_sentences(cfg), os.path.join(out_dir, "attention.png")
        )
        if attn:
            images.append(attn)
    md = os.path.join(out_dir, "summary.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(summary_markdown(run_dir, rows, images))
    return {"report_dir": out_dir, "summary": md, "images": images}
