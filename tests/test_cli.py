"""The real entry point, as a user runs it: help, and errors that are one line. The commands'
whole path (train, translate, evaluate) runs end to end in tests/test_submit.py (submitted to a
two-node cluster) and tests/inference/test_bulk.py (translate killed and resumed, on an embedded
local cluster)."""

import json
import os
import subprocess
import sys

import pytest

from job.cli import main

from conftest import ROOT, tiny_overrides


def run(*args, check=True, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "job", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
            f"\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", [None, "train", "translate", "evaluate"])
def test_help_explains_each_command(command):
    out = run(*([command] if command else []), "--help").stdout
    assert "usage:" in out
    if command is None:
        for c in ("train", "translate", "evaluate"):
            assert c in out
    if command == "train":
        assert "--set" in out and "--resume" in out and "--config" in out


def test_config_error_is_reported_without_traceback():
    proc = run("train", "--set", "train.lr=-1", check=False)
    assert proc.returncode == 2
    assert "train.lr" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_corpus_is_a_clear_error_before_training(ray_cluster, tmp_path, capsys):
    """In-process on the suite's cluster (the command's own start of Ray is the same code)."""
    argv = ["train", "--set", *tiny_overrides(tmp_path, **{"data.train": str(tmp_path / "no.csv")})]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "corpus not found" in err and "no.csv" in err


def test_missing_column_lists_the_columns(ray_cluster, tmp_path, capsys):
    argv = ["train", "--set", *tiny_overrides(tmp_path, **{"data.source_column": "src"})]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'src'" in err and "source" in err and "target" in err
    assert "Traceback" not in err
