"""Real two-node Ray clusters on this machine, driven the way users drive a cluster.

cluster/README.md's step 0 as written (`ray start --head` + `ray start --address` with token
authentication, `ray job submit --working-dir . -- python -m job train` on the bundled corpus by
relative paths) and a submitted `translate` job; and an elastic run that loses a node and gains
one back. Each node has its own temp dir, as a node on another machine has. A cluster is stopped
afterwards, also when the test fails (only the processes of this cluster: its own temp dirs).
"""

import contextlib
import csv
import glob
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import DATA, ROOT, doc_commands, epoch_rows_and_digests, tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.integration]
BIN = Path(sys.executable).parent
CLUSTER_README = ROOT / "cluster" / "README.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(*args, env, timeout=300, check=True):
    proc = subprocess.run(
        [str(BIN / "ray"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"ray {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def kill_cluster(temp_dir: str) -> None:
    """SIGKILL every process of this cluster: its command line names the cluster's temp dir, or it
    holds a file open there (its logs). Ray renames its agents (`ray::DashboardAgent`, ...) and
    may overwrite their environment, and they outlive their raylet as orphans; their log files
    still give them away."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmd or any(f.startswith(temp_dir) for f in _open_files(pid)):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def _open_files(pid: str) -> list[str]:
    files = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return files
    for fd in fds:
        with contextlib.suppress(OSError):
            files.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return files


def stop_cluster(temp_dir: str) -> None:
    """Kill the cluster whose temp dirs start with `temp_dir` (the head's and each node's) and
    remove those dirs."""
    kill_cluster(temp_dir)
    for d in glob.glob(temp_dir + "*"):
        shutil.rmtree(d, ignore_errors=True)


def raylet_pids() -> set[int]:
    pids = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"/raylet"):
                pids.add(int(pid))
    return pids


class Cluster:
    """`ray start` nodes of one cluster on this machine (token auth on), each node 1 CPU."""

    def __init__(self, tmp_path):
        self.temp_dir = f"/tmp/ray-submit-{uuid.uuid4().hex[:8]}"
        home = tmp_path / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            HOME=str(home),
            PATH=f"{BIN}:{env.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            PYTHONUNBUFFERED="1",
        )
        token = ray_cli("get-auth-token", "--generate", env=env).stdout.strip().splitlines()[-1]
        assert (home / ".ray" / "auth_token").exists()
        env["RAY_AUTH_TOKEN"] = token
        self.env, self.gcs, dash = env, free_port(), free_port()
        # Fixed default ports (the dashboard agent's 52365, the client server's 10001) would clash
        # with another Ray instance on this machine, e.g. the suite's embedded cluster.
        ray_cli(
            "start",
            "--head",
            f"--port={self.gcs}",
            "--num-cpus=1",
            "--include-dashboard=true",
            f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            env=env,
        )
        self.env["RAY_ADDRESS"] = f"http://127.0.0.1:{dash}"
        self.nodes = 1
        self.added = 0

    def add_node(self) -> int:
        """Start one more 1-CPU node; returns its raylet's pid once the cluster lists it."""
        before = raylet_pids()
        self.added += 1
        ray_cli(
            "start",
            f"--address=127.0.0.1:{self.gcs}",
            "--num-cpus=1",
            # Its own temp dir, as a node on another machine has: nodes sharing one would share
            # the unpacked --working-dir too, and each node's runtime-env agent deletes and
            # unpacks it again when its first task needs it, pulling the files (and the cwd) from
            # under the driver on the other node ("corpus not found: data/...").
            f"--temp-dir={self.temp_dir}-node{self.added}",
            f"--dashboard-agent-listen-port={free_port()}",
            env=self.env,
        )
        self.nodes += 1
        self.wait_for_nodes(self.nodes)
        new = raylet_pids() - before
        assert len(new) == 1, new
        return new.pop()

    def wait_for_nodes(self, n: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = ray_cli(
                "status", f"--address=127.0.0.1:{self.gcs}", env=self.env, check=False
            ).stdout
            active = status.split("Pending:")[0] if "Pending:" in status else status
            if active.count("node_") >= n:
                return
            time.sleep(2)

    def kill_node(self, raylet_pid: int) -> None:
        """SIGKILL a node's raylet and every process it started (its workers die with it)."""
        children = [
            int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == raylet_pid
        ]
        for pid in [raylet_pid, *children]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.nodes -= 1

    def stop(self) -> None:
        # Not `ray stop`: that would stop every Ray cluster on the machine. The node temp dirs
        # start with the head's, so one prefix finds every process and directory of this cluster.
        stop_cluster(self.temp_dir)


def _ppid(pid: int) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def submit(env, name, *job_args, timeout=600):
    """`ray job submit --working-dir . -- python -m job ...`, wait for a final state, return the
    JSON object the command printed last."""
    deadline = time.time() + 120
    while (
        True
    ):  # right after `ray start` the head's job agent may not be up yet: Ray says "try again later"
        sub_id = f"{name}-{uuid.uuid4().hex[:6]}"
        proc = ray_cli(
            "job",
            "submit",
            "--no-wait",
            f"--submission-id={sub_id}",
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "job",
            *job_args,
            env=env,
            check=False,
        )
        if proc.returncode == 0:
            break
        assert "try again later" in proc.stderr and time.time() < deadline, (
            f"submit failed:\n{proc.stderr[-3000:]}"
        )
        time.sleep(3)
    deadline, state = time.time() + timeout, ""
    while time.time() < deadline:
        proc = ray_cli("job", "status", sub_id, env=env, check=False)
        state = (proc.stdout + proc.stderr[-300:]).lower()
        if any(f"job '{sub_id}' {word}" in state for word in ("succeeded", "failed", "stopped")):
            break
        time.sleep(2)
    logs = ray_cli("job", "logs", sub_id, env=env).stdout
    assert f"job '{sub_id}' succeeded" in state, f"{sub_id}: {state[-1500:]}\n{logs[-4000:]}"
    lines = [line for line in logs.splitlines() if line.strip().startswith("{")]
    return json.loads(lines[-1])


def _isolated(cmd: str, temp_dir: str, ports: dict[str, str], runs: Path) -> str:
    """A step-0 command of cluster/README.md, isolated from other Ray clusters on this machine:
    free ports for the fixed ones, temp dirs under this cluster's own prefix, the runs in tmp."""
    for fixed, free in ports.items():
        cmd = cmd.replace(fixed, free)
    cmd = cmd.replace("/tmp/ray-node2", f"{temp_dir}-node2").replace("/tmp/seq2seq-runs", str(runs))
    if cmd.startswith("ray start --head"):
        cmd += (
            f" --temp-dir={temp_dir} --dashboard-host=127.0.0.1 --ray-client-server-port="
            f"{free_port()} --dashboard-agent-listen-port={free_port()}"
        )
    elif cmd.startswith("ray start --address"):
        cmd += f" --dashboard-agent-listen-port={free_port()}"
    return cmd


def test_readme_two_node_cluster_as_written_then_translate_job(tmp_path):
    """Step 0 of cluster/README.md, command by command, as a reader runs it: token auth, two
    `ray start` nodes (the second with its own temp dir), `ray job submit --working-dir .` of the
    bundled config and corpus by relative paths, then `ray stop`. Only what isolates it from other
    clusters here changes: ports, temp dirs, the runs directory. Then a submitted `translate` of
    a corpus inside the working dir. Checks: the job SUCCEEDED, its two DDP workers ran on
    different nodes, checkpoints landed, the translation has one row per input row, in order."""
    step0 = [c for heading, c in doc_commands(CLUSTER_README) if heading.startswith("0.")]
    assert [c.split()[:2] for c in step0] == [
        ["export", "RAY_AUTH_MODE=token"],
        ["ray", "get-auth-token"],
        ["ray", "start"],
        ["ray", "start"],
        ["export", "RAY_ADDRESS=http://127.0.0.1:8265"],
        ["ray", "job"],
        ["ray", "stop"],
    ], step0
    temp_dir = f"/tmp/ray-readme-{uuid.uuid4().hex[:8]}"
    ports = {"6379": str(free_port()), "8265": str(free_port())}
    runs = tmp_path / "runs"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PATH=f"{BIN}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    try:
        for cmd in step0[:-1]:
            cmd = _isolated(cmd, temp_dir, ports, runs)
            if cmd.startswith("export "):
                key, value = cmd.split(" ", 1)[1].split("=", 1)
                env[key] = value
                continue
            words = shlex.split(cmd)
            proc = ray_cli(*words[1:], env=env, timeout=600, check=False)
            assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            if words[:2] == ["ray", "job"]:
                summary = json.loads(
                    [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
                )
        assert step0[-1] == "ray stop"  # replaced by stopping this cluster's processes only
        run_dir = Path(summary["run_dir"])
        assert run_dir == runs / "sample"
        with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        start = next(r for r in rows if r.get("event") == "start")
        assert start["workers"] == 2 and len(set(start["nodes"])) == 2, start
        assert summary["data"]["train"]["path"] == "data/sample/train.csv"
        ckpts = [p for p in run_dir.iterdir() if p.name.startswith("checkpoint_")]
        assert ckpts and Path(summary["best_checkpoint"]).parent == run_dir
        assert (Path(summary["best_checkpoint"]) / "model.pt").exists()

        out = tmp_path / "translations.csv"
        rel = DATA.relative_to(ROOT).as_posix()
        res = submit(
            env,
            "translate",
            "translate",
            "--checkpoint",
            summary["best_checkpoint"],
            "--input",
            f"{rel}/tiny_test.csv",
            "--output",
            str(out),
            "--beam",
            "2",
        )
    finally:
        stop_cluster(temp_dir)
    with open(DATA / "tiny_test.csv", encoding="utf-8", newline="") as f:
        inputs = list(csv.DictReader(f))
    with open(out, encoding="utf-8", newline="") as f:
        outputs = list(csv.DictReader(f))
    assert res["rows"] == len(outputs) == len(inputs)
    assert [r["id"] for r in outputs] == [r["id"] for r in inputs]


def test_elastic_run_survives_a_lost_node_and_grows_back(tmp_path):
    """scaling.num_workers [1, 2]: a node dies mid-run -> the run goes on with 1 worker from the
    latest (step) checkpoint; a node joins -> it grows back to 2 workers; every epoch is validated
    once and trains each row once, across the resizes.
    20 epochs: enough training left after the node joins for the resize (node start-up, the
    resize interval, a restart) to happen before the run ends."""
    cluster = Cluster(tmp_path)
    try:
        node = cluster.add_node()
        shared = tmp_path / "shared"
        overrides = tiny_overrides(
            tmp_path,
            **{
                "storage_path": str(shared),
                "data.test": "null",
                "train.epochs": 20,
                "train.batch_tokens": 300,
                "scaling.num_workers": "[1,2]",
                "scaling.max_failures": 5,
                "scaling.elastic_resize_interval_s": 5,
                "train.checkpoint_every_steps": 40,
                "train.early_stopping_patience": "null",
                "train.average_last": 0,
                "train.max_minutes": "null",
            },
        )
        metrics = shared / "sample" / "metrics.jsonl"
        events: list[str] = []

        def rows():
            try:
                return [json.loads(line) for line in open(metrics)]
            except (OSError, ValueError):
                return []

        def chaos():
            deadline = time.time() + 400
            # Lose a node once a checkpoint is surely registered: Ray Train's controller takes a
            # reported checkpoint in at its next poll of the workers (every 2 s,
            # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S); a node lost before that restarts from nothing.
            second = None
            while time.time() < deadline and not events:
                if second is None and sum("valid_loss" in r for r in rows()) >= 2:
                    second = time.time()
                if second is not None and time.time() > second + 4:
                    cluster.kill_node(node)
                    events.append("killed")
                time.sleep(0.2)
            while time.time() < deadline:  # once the run has resumed on one worker, add a node
                if any(r.get("event") == "resume" and r["workers"] == 1 for r in rows()):
                    cluster.add_node()
                    events.append("added")
                    return
                time.sleep(0.5)

        watcher = threading.Thread(target=chaos, daemon=True)
        watcher.start()
        summary = submit(cluster.env, "elastic", "train", "--set", *overrides, timeout=900)
        watcher.join(timeout=5)
        log = rows()
        sizes = [(r["event"], r["workers"]) for r in log if r.get("event") in ("start", "resume")]
        assert events == ["killed", "added"], (events, sizes)
        assert sizes[0] == ("start", 2) and ("resume", 1) in sizes and sizes[-1] == ("resume", 2), (
            sizes
        )
        assert [r["epoch"] for r in log if "valid_loss" in r and not r.get("averaged")] == list(
            range(1, 21)
        )
        # the resizes resumed mid-epoch with another worker count: still each row once per epoch
        epochs, once = epoch_rows_and_digests(str(shared / "sample"))
        assert len(epochs) == 20 and set(epochs) == {once}
        assert summary["best_checkpoint"]
    finally:
        cluster.stop()
