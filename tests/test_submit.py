"""cluster/README.md's step 0 as written, on a real two-node Ray cluster on this machine: `ray
start --head` + `ray start --address` with token authentication, `ray job submit --working-dir .
-- python -m job train` on the bundled corpus by relative paths, then submitted `translate` and
`evaluate` jobs: the real commands, as a user drives a cluster. (The elastic run that loses a node
and gains one back is in tests/training/test_trainer.py.)
"""

import csv
import json
import os
import shlex
import uuid
from pathlib import Path

import pytest

from conftest import DATA, ROOT, doc_commands
from ray_nodes import BIN, free_port, ray_cli, stop_cluster, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
CLUSTER_README = ROOT / "cluster" / "README.md"


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


def test_readme_two_node_cluster_as_written_then_translate_and_evaluate_jobs(tmp_path):
    """Step 0 of cluster/README.md, command by command, as a reader runs it: token auth, two
    `ray start` nodes (the second with its own temp dir), `ray job submit --working-dir .` of the
    bundled config and corpus by relative paths, then `ray stop`. Only what isolates it from other
    clusters here changes: ports, temp dirs, the runs directory. Then a submitted `translate` and
    `evaluate` of a corpus inside the working dir. Checks: the job SUCCEEDED, its two DDP workers
    ran on different nodes, checkpoints landed, the translation has one row per input row, in
    order, with the documented columns, and evaluate gives BLEU and chrF with signatures."""
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
        assert summary["test_bleu"] is None  # data.test=null: no test split
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
        ev = submit(
            env, "evaluate", "evaluate", "--checkpoint", summary["best_checkpoint"],
            "--input", f"{rel}/tiny_test.csv",
        )  # fmt: skip
    finally:
        stop_cluster(temp_dir)
    with open(DATA / "tiny_test.csv", encoding="utf-8", newline="") as f:
        inputs = list(csv.DictReader(f))
    with open(out, encoding="utf-8", newline="") as f:
        outputs = list(csv.DictReader(f))
    assert res["rows"] == len(outputs) == len(inputs)
    assert [r["id"] for r in outputs] == [r["id"] for r in inputs]
    assert list(outputs[0]) == ["id", "source", "translation", "score", "status"]
    assert {"bleu", "chrf", "bleu_signature", "chrf_signature"} <= set(ev)
    assert ev["sentences"] == len(inputs) and ev["bleu_signature"].startswith("nrefs:1")
