"""The real entry point, as a user runs it: help, and errors that are one line. The commands'
whole path (train, translate, evaluate) runs end to end in tests/test_submit.py (submitted to a
two-node cluster) and tests/inference/test_bulk.py (translate killed and resumed, on an embedded
local cluster)."""

import json
import os
import subprocess
import sys

import pytest

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


@pytest.mark.integration  # the command starts a local Ray cluster first
def test_missing_corpus_is_a_clear_error_before_training(tmp_path):
    proc = run(
        "train",
        "--set",
        *tiny_overrides(tmp_path, **{"data.train": str(tmp_path / "nope.csv")}),
        check=False,
    )
    assert proc.returncode == 2
    assert "corpus not found" in proc.stderr and "nope.csv" in proc.stderr


@pytest.mark.integration
def test_missing_column_lists_the_columns(tmp_path):
    proc = run(
        "train", "--set", *tiny_overrides(tmp_path, **{"data.source_column": "src"}), check=False
    )
    assert proc.returncode == 2
    assert "'src'" in proc.stderr and "source" in proc.stderr and "target" in proc.stderr
