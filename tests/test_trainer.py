"""The trainer's failure policy on a real local Ray cluster: a training worker process killed
mid-run."""

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from job.config import load_config

from conftest import epoch_rows_and_digests, tiny_overrides

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


def test_a_worker_killed_mid_epoch_resumes_at_the_last_step_checkpoint(ray_cluster, tmp_path):
    """train.checkpoint_every_steps 10; a training worker is SIGKILLed at a random step of an
    epoch after the first. The restart continues that epoch from the latest step checkpoint: no
    step before it is redone, the steps lost are those since it, and every epoch (the
    interrupted one included) trains each row once, as a run that was never killed does
    (test_pipeline)."""
    from job.pipeline import run_train

    every = 10
    cfg = load_config(
        None,
        tiny_overrides(
            tmp_path,
            **{
                "train.epochs": 4,
                "train.batch_tokens": 300,
                "train.checkpoint_every_steps": every,
                "scaling.max_failures": 1,
                "data.test": "null",
            },
        ),
    )
    metrics = os.path.join(cfg.run_dir, "metrics.jsonl")
    snapshot = os.path.join(cfg.run_dir, "checkpoint_manager_snapshot.json")
    killed: list[tuple[int, int]] = []  # (the latest checkpoint's step, the last step logged)

    def latest_checkpoint() -> dict | None:
        """The metrics of the latest checkpoint Ray Train has taken in: its controller writes
        this file when it registers one (it polls the workers every 2 s; a checkpoint reported
        but not yet registered is not what a restart gets)."""
        try:
            with open(snapshot, encoding="utf-8") as f:
                latest = json.load(f).get("latest_checkpoint_result")
        except (OSError, ValueError):
            return None
        return latest["metrics"] if latest else None

    def kill_mid_epoch():
        deadline, pause = time.time() + 300, random.uniform(0.0, 0.5)
        while time.time() < deadline:
            latest = latest_checkpoint()
            try:
                steps = [r["step"] for r in _read_rows(metrics) if "train_loss" in r]
            except (OSError, ValueError):
                steps = []
            # a step checkpoint after the first epoch is in, and training has gone past it
            mid_epoch = latest and latest["epoch"] > 1 and latest["epoch"] % 1
            if mid_epoch and steps and steps[-1] > latest["step"]:
                time.sleep(pause)  # then a random step
                pids = train_worker_pids()
                if pids:
                    last = [r["step"] for r in _read_rows(metrics) if "train_loss" in r][-1]
                    os.kill(pids[-1], signal.SIGKILL)
                    killed.append((latest["step"], last))
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_mid_epoch, daemon=True)
    watcher.start()
    summary = run_train(cfg)
    watcher.join(timeout=5)
    assert killed, "no training worker was killed (run too short?)"

    rows = _read_rows(metrics)
    (resume,) = [r for r in rows if r.get("event") == "resume"]
    i = rows.index(resume)
    before, after = rows[:i], rows[i + 1 :]
    # the restart began at the latest step checkpoint (or one registered while the kill was
    # under way), in the middle of an epoch; the log kept nothing past it
    checkpoint_step, last_logged = killed[0]
    assert resume["step"] % every == 0 and resume["epoch_rows_done"] > 0
    assert checkpoint_step <= resume["step"] <= last_logged + every
    assert resume["step"] in [r["step"] for r in before if r.get("event") == "checkpoint"]
    assert max(r["step"] for r in before) == resume["step"]
    after_steps = [r["step"] for r in after if "train_loss" in r]
    assert after_steps and resume["step"] < after_steps[0] <= resume["step"] + 2
    # each epoch trained every row once, the interrupted one too
    epochs, once = epoch_rows_and_digests(cfg.run_dir)
    assert len(epochs) == cfg.train.epochs and set(epochs) == {once}
    assert [r["epoch"] for r in rows if "valid_loss" in r] == [1, 2, 3, 4]
    assert summary["best_checkpoint"]
