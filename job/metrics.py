"""metrics.jsonl, the run's log, in one place: the writer (rank 0), the reader, the console
line of each row, and the driver thread that prints new rows while the trainer runs.

One JSON object per line. Rows: `{"event": "start" | "resume", "step", ...}` when the workers
start or restart; training rows (step, epoch, train_loss, lr, src_tokens, tgt_tokens,
tokens_per_s, elapsed_s, ...) every train.log_every_steps; validation rows (valid_loss,
valid_ppl, valid_bleu, ...) at each validation, with `epoch_rows`/`epoch_digest` at epoch ends
(job.training.position); `{"event": "checkpoint", ...}` at step checkpoints not validated;
`{"event": "early_stop", ...}`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading

from job import storage
from job.errors import ReportError

METRICS_FILE = "metrics.jsonl"


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a metrics.jsonl; [] when there is none yet."""
    if not storage.exists(path):
        return []
    return [line for line in storage.read_text(path).splitlines() if line.strip()]


def read_rows(run_dir: str) -> list[dict]:
    path = storage.join(run_dir, METRICS_FILE)
    if not storage.exists(path):
        raise ReportError(
            f"{run_dir}: no {METRICS_FILE}; is this a run directory (storage_path/name)?"
        )
    return [json.loads(line) for line in read_lines(path)]


def improves(bleu: float | None, best: float | None) -> bool:
    """Whether a validation BLEU beats the best so far (ties do not: the earlier one stays)."""
    return bleu is not None and (best is None or bleu > best)


class MetricsLog:
    """The writer, on rank 0 only; rewritten whole on each add (it is small) so it works on object
    stores too. On resume, rows after the checkpoint's step are dropped: those steps are trained
    again. Also mirrors numeric values to TensorBoard when tensorboardX is installed."""

    def __init__(self, run_dir: str, resume_step: int):
        self.path = storage.join(run_dir, METRICS_FILE)
        self.rows: list[str] = []
        if resume_step:
            lines = read_lines(self.path)
            self.rows = [line for line in lines if json.loads(line).get("step", 0) <= resume_step]
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
    """TensorBoard event files in run_dir/tensorboard (local runs with tensorboardX installed)."""
    if storage.is_uri(run_dir):
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(storage.join(run_dir, "tensorboard"))


class ConsoleLines:
    """Each row as one readable console line; remembers the best validation BLEU seen."""

    def __init__(self, total_epochs: int):
        self.total_epochs = total_epochs
        self.best: float | None = None

    def format(self, r: dict) -> str:
        if r.get("event") in ("start", "resume"):
            what = f"resumed at step {r['step']}: " if r["event"] == "resume" else ""
            if r.get("epoch_rows_done"):
                what += f"{r['epoch_rows_done']:,} rows into epoch {r['epoch'] + 1}, "
            nodes = len(set(r.get("nodes", [])))
            return (
                f"[train] {what}{r['parameters']:,} parameters, {r['workers']} worker(s) "
                f"on {r['device']}, {nodes} node(s)"
            )
        if "train_loss" in r:
            return self._train(r)
        if "valid_loss" in r:
            return self._valid(r)
        if r.get("event") == "checkpoint":
            done = (
                f", {r['epoch_rows_done']:,} rows of the epoch done"
                if "epoch_rows_done" in r
                else ""
            )
            return f"[train] checkpoint at step {r['step']}{done}"
        if r.get("event") == "early_stop":
            return (
                f"[train] early stop at epoch {r['epoch']}: no better validation BLEU "
                f"for {r['patience']} validations"
            )
        return json.dumps(r)

    def _train(self, r: dict) -> str:
        eta, total = "", ""
        if r.get("progress"):
            eta = f"  eta {max(r['elapsed_s'] / r['progress'] - r['elapsed_s'], 0):.0f}s"
            total = f"/~{round(r['step'] / r['progress'])}"
        return (
            f"[train] epoch {r['epoch']:.2f}/{self.total_epochs} step {r['step']}{total}  "
            f"loss {r['train_loss']:.3f}  ppl {r['train_ppl']:.2f}  lr {r['lr']:.2e}  "
            f"{r['tokens_per_s']:.0f} tok/s  elapsed {r['elapsed_s']:.0f}s{eta}"
        )

    def _valid(self, r: dict) -> str:
        bleu = r.get("valid_bleu")
        if improves(bleu, self.best):
            self.best = bleu
        extra = ""
        if bleu is not None:
            extra = (
                f"  BLEU {bleu:.2f}  chrF {r.get('valid_chrf', 0):.2f}  best BLEU {self.best:.2f}"
            )
        if r.get("averaged"):
            what = f"mean of the last {r['averaged']} checkpoints"
        else:
            what = f"epoch {r['epoch']} step {r['step']}"
        return f"[valid] {what}  loss {r['valid_loss']:.3f}  ppl {r['valid_ppl']:.2f}{extra}"


class ProgressPrinter(threading.Thread):
    """Prints new rows of the run's metrics.jsonl as console lines, on the driver, while the
    trainer runs (Ray's per-worker log forwarding stays off unless --verbose)."""

    def __init__(self, run_dir: str, total_epochs: int, out=None):
        super().__init__(daemon=True)
        self.path = storage.join(run_dir, METRICS_FILE)
        self.lines = ConsoleLines(total_epochs)
        self.out = out or sys.stdout
        self.printed: list[str] = []  # the file's lines as of the last poll
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
            lines = read_lines(self.path)
        except OSError:
            return
        # After a restart from a checkpoint the file is rewritten: rows past the checkpoint's step
        # are gone and new ones follow. Print what differs from the last poll.
        same = 0
        for old, new in zip(self.printed, lines):
            if old != new:
                break
            same += 1
        for line in lines[same:]:
            with contextlib.suppress(ValueError, KeyError):
                print(self.lines.format(json.loads(line)), file=self.out, flush=True)
        self.printed = lines
