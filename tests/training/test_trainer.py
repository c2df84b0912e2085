"""The trainer's failure policy and elastic scaling on a real two-node Ray cluster (`ray start`
nodes, `ray job submit`): a node lost mid-epoch, right after a step checkpoint, and a node gained
back. The restart continues the epoch from the latest step checkpoint with another worker count,
redoing and skipping nothing."""

import json
import threading
import time

import pytest

from conftest import epoch_rows_and_digests, tiny_overrides
from ray_nodes import Cluster, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
EPOCHS = 12
EVERY = 40  # train.checkpoint_every_steps


def _rows(path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    except (OSError, ValueError):
        return []


def assert_resumed_at_checkpoints(log: list[dict]) -> None:
    """Every restart began at a checkpoint logged before it (a step checkpoint's row, or an epoch
    end's), the log kept nothing past that step, and training went on from the next step."""
    for i, resume in enumerate(log):
        if resume.get("event") != "resume":
            continue
        before, after = log[:i], log[i + 1 :]
        checkpoints = [
            r["step"] for r in before if r.get("event") == "checkpoint" or "epoch_rows" in r
        ]
        assert resume["step"] in checkpoints, (resume, checkpoints)
        assert max(r["step"] for r in before) == resume["step"], resume
        steps = [r["step"] for r in after if "train_loss" in r]
        assert not steps or resume["step"] < steps[0] <= resume["step"] + 2, (resume, steps[:3])


def test_a_node_lost_mid_epoch_resumes_at_its_step_checkpoint_and_the_run_grows_back(tmp_path):
    """scaling.num_workers [1, 2], a step checkpoint every 40 steps. Once Ray Train has taken in
    a mid-epoch step checkpoint after the first epoch, and training has gone past it, the second
    node is SIGKILLed with its worker: the run goes on with 1 worker from that checkpoint (the
    steps lost are those since it). A node joins: the run grows back to 2 workers. Every epoch is
    validated once and trains each row once, the interrupted ones too, across both resizes.
    12 epochs leave training enough after the node joins for the resize (node start-up, the
    resize interval, a restart: about 25 s, while one worker trains an epoch in about 10 s) to
    happen before the run ends.

    After the node dies, Ray Train first tries the old size again while the dead node's CPU is
    still listed, and falls back to what is there once RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S
    has passed (60 s by default; 20 s here, above a worker group's start-up of about 10 s)."""
    cluster = Cluster(tmp_path, node_env={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20"})
    try:
        node = cluster.add_node()
        shared = tmp_path / "shared"
        overrides = tiny_overrides(
            tmp_path,
            **{
                "storage_path": str(shared),
                "data.test": "null",
                "train.epochs": EPOCHS,
                "train.batch_tokens": 300,
                "scaling.num_workers": "[1,2]",
                "scaling.max_failures": 5,
                "scaling.elastic_resize_interval_s": 5,
                "train.checkpoint_every_steps": EVERY,
                "train.early_stopping_patience": "null",
                "train.average_last": 0,
                "train.max_minutes": "null",
            },
        )
        metrics = shared / "sample" / "metrics.jsonl"
        snapshot = shared / "sample" / "checkpoint_manager_snapshot.json"
        events: list[str] = []
        killed: list[tuple[int, int]] = []  # (the latest checkpoint's step, the last step logged)

        def latest_checkpoint() -> dict | None:
            """The metrics of the latest checkpoint Ray Train's controller has taken in (it
            polls the workers every 2 s; one reported but not yet registered is not what a
            restart gets)."""
            try:
                latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
            except (OSError, ValueError):
                return None
            return latest["metrics"] if latest else None

        def chaos():
            deadline = time.time() + 400
            while time.time() < deadline and not events:
                latest = latest_checkpoint()
                steps = [r["step"] for r in _rows(metrics) if "train_loss" in r]
                mid_epoch = latest and latest["epoch"] > 1 and latest["epoch"] % 1
                if mid_epoch and steps and steps[-1] > latest["step"]:
                    cluster.kill_node(node)
                    killed.append((latest["step"], steps[-1]))
                    events.append("killed")
                time.sleep(0.1)
            while time.time() < deadline:  # once the run has resumed on one worker, add a node
                if any(r.get("event") == "resume" and r["workers"] == 1 for r in _rows(metrics)):
                    cluster.add_node()
                    events.append("added")
                    return
                time.sleep(0.5)

        watcher = threading.Thread(target=chaos, daemon=True)
        watcher.start()
        summary = submit(cluster.env, "elastic", "train", "--set", *overrides, timeout=900)
        watcher.join(timeout=5)
    finally:
        cluster.stop()

    log = _rows(metrics)
    sizes = [(r["event"], r["workers"]) for r in log if r.get("event") in ("start", "resume")]
    assert events == ["killed", "added"], (events, sizes)
    assert sizes[0] == ("start", 2) and sizes[1] == ("resume", 1) and sizes[-1] == ("resume", 2)
    # the first restart began mid-epoch at the step checkpoint registered when the node died (or
    # one registered while the kill was under way)
    lost = next(r for r in log if r.get("event") == "resume")
    checkpoint_step, last_logged = killed[0]
    assert lost["step"] % EVERY == 0 and lost["epoch_rows_done"] > 0
    assert checkpoint_step <= lost["step"] <= last_logged + EVERY
    assert_resumed_at_checkpoints(log)
    assert [r["epoch"] for r in log if "valid_loss" in r] == list(range(1, EPOCHS + 1))
    # resumed mid-epoch with another worker count: still each row once per epoch
    epochs, once = epoch_rows_and_digests(str(shared / "sample"))
    assert len(epochs) == EPOCHS and set(epochs) == {once}
    assert summary["best_checkpoint"]
