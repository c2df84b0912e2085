"""The trainer's failure policy on a real local Ray cluster: a training worker process killed
mid-run."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from job.config import load_config

from conftest import tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_worker_pids() -> list[int]:
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


def test_killed_worker_restarts_from_the_latest_checkpoint(ray_cluster, tmp_path):
    from job.pipeline import run_train

    cfg = load_config(
        None,
        tiny_overrides(
            tmp_path,
            **{
                "train.epochs": 8,
                "train.batch_tokens": 300,
                "scaling.max_failures": 1,
                "data.test": "null",
            },
        ),
    )
    metrics = os.path.join(cfg.run_dir, "metrics.jsonl")
    killed: list[int] = []

    def kill_after_second_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                rows = _read_rows(metrics)
            except (OSError, ValueError):
                rows = []
            valid = [r for r in rows if "valid_loss" in r]
            trained_after = [
                r for r in rows if "train_loss" in r and valid and r["step"] > valid[-1]["step"]
            ]
            if len(valid) >= 2 and trained_after:  # mid-epoch, after a checkpoint
                pids = train_worker_pids()
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed.append(pids[-1])
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_after_second_checkpoint, daemon=True)
    watcher.start()
    summary = run_train(cfg)
    watcher.join(timeout=5)
    assert killed, "no training worker was killed (run too short?)"

    rows = _read_rows(metrics)
    resumes = [r for r in rows if r.get("event") == "resume"]
    assert len(resumes) == 1
    resume_step = resumes[0]["step"]
    i = rows.index(resumes[0])
    before, after = rows[:i], rows[i + 1 :]
    # The restart began exactly at a checkpoint (a validation row), and the log kept nothing past
    # it.
    assert resume_step in [r["step"] for r in before if "valid_loss" in r]
    assert max(r["step"] for r in before) == resume_step
    # Steps before the checkpoint are not redone, none after it skipped: logging continues at the
    # next interval.
    after_steps = [r["step"] for r in after if "train_loss" in r]
    assert after_steps and resume_step < after_steps[0] <= resume_step + cfg.train.log_every_steps
    assert after_steps == sorted(after_steps)
    valid_epochs = [r["epoch"] for r in rows if "valid_loss" in r]
    assert valid_epochs == list(range(1, cfg.train.epochs + 1))
    with open(os.path.join(summary["best_checkpoint"], "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    assert state["step"] >= resume_step
