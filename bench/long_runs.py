"""Long runs on the bundled corpus: what step checkpoints cost, and what a killed worker loses.

(a) tokens/s with checkpoints at epoch ends only against `train.checkpoint_every_steps 100`,
    side by side in one run, alternated A B, B A, ... (this VM's speed drifts within minutes);
    the default model (configs/sample.yaml), 2 workers x 1 thread, tokens/s from metrics.jsonl
    after WARMUP_S of training (bench/train_throughput.project_run). And, immune to the drift,
    within each step-checkpoint run: the seconds the log intervals holding a checkpoint took
    beyond the median of their neighbours, as a share of the training time;
(b) a training worker SIGKILLed at a random moment of an epoch, with step checkpoints every
    KILL_EVERY steps: the steps lost (the last step logged before the kill minus the step the
    restart resumed at), the seconds from the kill to the first training row after it, and
    whether every finished epoch trained each row once (epoch_rows/epoch_digest against the
    prepared data, job.training.position).

    .venv/bin/python bench/long_runs.py [--seconds 100] [--rounds 2] [--no-record]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, append_section, run_cli
from train_throughput import project_run

sys.path.insert(0, str(ROOT))
KILL_EVERY = 100


def worker_pids() -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::RayTrainWorker"):
                pids.append(int(pid))
    return sorted(pids)


def rows_of(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return []


def kill_run(
    workdir: Path, seconds: float, extra: list[str] | tuple = (), every: int = KILL_EVERY
) -> dict:
    """(b): kill one worker at a random moment after the first registered step checkpoint (Ray
    Train's controller writes checkpoint_manager_snapshot.json when it takes one in)."""
    from job.corpus.manifest import PREPARED_DIR, part_paths, read_manifest
    from job.training.position import digest_of_parts

    run_dir = workdir / "kill"
    metrics, snapshot = run_dir / "metrics.jsonl", run_dir / "checkpoint_manager_snapshot.json"
    event: dict = {}

    def chaos():
        deadline = time.time() + 1800
        while time.time() < deadline:
            try:
                latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]
            except (OSError, ValueError, KeyError, TypeError):
                latest = None
            if latest and latest["epoch"] % 1:  # a step checkpoint is registered: kill soon
                time.sleep(random.uniform(0, 30))
                steps = [r["step"] for r in rows_of(metrics) if "train_loss" in r]
                pids = worker_pids()
                if pids and steps:
                    os.kill(pids[-1], signal.SIGKILL)
                    event.update(killed_at=time.time(), last_step=steps[-1])
                    break
            time.sleep(0.2)
        while time.time() < deadline:  # the restart: until the first training row after it
            rows = rows_of(metrics)
            resumed = [i for i, r in enumerate(rows) if r.get("event") == "resume"]
            if resumed and any("train_loss" in r for r in rows[resumed[0] + 1 :]):
                event["restart_s"] = round(time.time() - event["killed_at"], 1)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=chaos, daemon=True)
    watcher.start()
    run_cli(
        "train", "--set", f"storage_path={workdir}", "name=kill", "train.epochs=2",
        f"train.max_minutes={seconds * 2.5 / 60}", "train.log_every_steps=10",
        f"train.checkpoint_every_steps={every}", "scaling.max_failures=1",
        "data.test=null", "train.average_last=0", "train.early_stopping_patience=null", *extra,
    )  # fmt: skip
    watcher.join(timeout=5)
    if not event:
        raise SystemExit("(b): no worker was killed (run too short?)")
    rows = rows_of(metrics)
    resume = next(r for r in rows if r.get("event") == "resume")
    after = [r for r in rows[rows.index(resume) + 1 :] if "train_loss" in r]
    prepared = run_dir / PREPARED_DIR
    parts = part_paths(str(prepared), read_manifest(str(prepared)), "train")
    once = (sum(n for _, n in parts), f"{digest_of_parts(parts):016x}")
    epochs = [(r["epoch_rows"], r["epoch_digest"]) for r in rows if "epoch_rows" in r]
    return {
        "checkpoint_every_steps": every,
        "last_step_before_kill": event["last_step"],
        "resumed_at_step": resume["step"],
        "steps_lost": event["last_step"] - resume["step"],
        "rows_into_epoch_at_resume": resume.get("epoch_rows_done", 0),
        "restart_s": event.get("restart_s"),
        "first_step_after": after[0]["step"] if after else None,
        "epochs_finished": len(epochs),
        "each_row_once": bool(epochs) and set(epochs) == {once},
    }


def checkpoint_time(run_dir: Path) -> dict:
    """Within one run, immune to the VM's drift: the training time that the intervals between
    log rows holding a step checkpoint took beyond the median of their neighbours without one,
    as a share of all the training time measured."""
    rows = rows_of(run_dir / "metrics.jsonl")
    logged = [(r["step"], r["elapsed_s"]) for r in rows if "train_loss" in r and r["epoch"] < 1]
    checkpoints = {r["step"] for r in rows if r.get("event") == "checkpoint"}
    spans = [(a[0], b[0], b[1] - a[1]) for a, b in itertools.pairwise(logged)]
    excess = 0.0
    for i, (lo, hi, seconds) in enumerate(spans):
        if any(lo <= c < hi for c in checkpoints):
            near = [s for j, (a, b, s) in enumerate(spans) if abs(j - i) <= 4 and j != i
                    and not any(a <= c < b for c in checkpoints)]  # fmt: skip
            excess += seconds - statistics.median(near)
    total = logged[-1][1] - logged[0][1] if len(logged) > 1 else 0.0
    return {"checkpoints": len(checkpoints), "seconds": round(excess, 2),
            "share": round(excess / total, 4) if total else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    variants = {"epoch ends only": [], f"every {KILL_EVERY} steps": [
        f"train.checkpoint_every_steps={KILL_EVERY}"]}  # fmt: skip
    results: dict[str, list[float]] = {k: [] for k in variants}
    within: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for label in order:
                tag = f"{'step' if 'every' in label else 'epoch'}{r}"
                out = project_run(tag, variants[label], args.seconds, work)
                results[label].append(out["tokens_per_s"])
                if "every" in label:
                    within.append(checkpoint_time(work / f"tp-{tag}"))
                print(f"[bench] round {r + 1} {label}: {out['tokens_per_s']:.0f} tok/s", flush=True)
        kill = kill_run(work, args.seconds)
    base, step = results["epoch ends only"], results[f"every {KILL_EVERY} steps"]
    ratios = [s / b for s, b in zip(step, base)]
    summary = {
        "epoch_only_tokens_per_s": [round(x) for x in base],
        "step_checkpoint_tokens_per_s": [round(x) for x in step],
        "ratio_per_round": [round(x, 4) for x in ratios],
        "mean_ratio": round(statistics.mean(ratios), 4),
        "within_run_checkpoint_time": within,
        "kill": kill,
    }
    print(json.dumps(summary), flush=True)
    if args.no_record:
        return
    lines = [
        "| round | epoch-end checkpoints only, tok/s | + every 100 steps, tok/s | ratio |",
        "|---|---|---|---|",
    ]
    for i, (b, s) in enumerate(zip(base, step)):
        lines.append(f"| {i + 1} | {b:,.0f} | {s:,.0f} | {s / b:.3f} |")
    append_section(
        "Long runs: step checkpoint cost and a killed worker",
        f"bench/long_runs.py --seconds {args.seconds:g} --rounds {args.rounds}",
        "\n".join(lines)
        + f"\n\nMean ratio {summary['mean_ratio']:.3f}. Within each step-checkpoint "
        f"run, the time the checkpoints took beyond their neighbours' intervals: "
        + ", ".join(f"{w['seconds']} s for {w['checkpoints']} ({w['share']:.2%})" for w in within)
        + ".\n\n"
        f"Kill: `{json.dumps(kill)}`\n\n```json\n{json.dumps(summary)}\n```",
    )


if __name__ == "__main__":
    main()
