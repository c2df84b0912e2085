"""Ray clusters of several nodes on this machine, started the way users start them (`ray start`
with token authentication, each node its own temp dir, as a node on another machine has), and
`ray job submit` to them. A cluster is stopped by its own temp dirs, never by `ray stop`, which
would stop every Ray cluster on the machine."""

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent


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
    """`ray start` nodes of one cluster on this machine (token auth on), each node 1 CPU.
    `node_env`: environment variables for every node's processes (the job's driver among them)."""

    def __init__(self, tmp_path, node_env: dict[str, str] | None = None):
        self.temp_dir = f"/tmp/ray-submit-{uuid.uuid4().hex[:8]}"
        home = tmp_path / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            HOME=str(home),
            PATH=f"{BIN}:{env.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            PYTHONUNBUFFERED="1",
            **(node_env or {}),
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
