"""The real entry points, as a user runs them (each command starts its own local Ray cluster)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import DATA, ROOT, tiny_overrides


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


def test_missing_corpus_is_a_clear_error_before_training(tmp_path):
    proc = run(
        "train",
        "--set",
        *tiny_overrides(tmp_path, **{"data.train": str(tmp_path / "nope.csv")}),
        check=False,
    )
    assert proc.returncode == 2
    assert "corpus not found" in proc.stderr and "nope.csv" in proc.stderr


def test_missing_column_lists_the_columns(tmp_path):
    proc = run(
        "train", "--set", *tiny_overrides(tmp_path, **{"data.source_column": "src"}), check=False
    )
    assert proc.returncode == 2
    assert "'src'" in proc.stderr and "source" in proc.stderr and "target" in proc.stderr


@pytest.mark.slow
def test_train_translate_evaluate_end_to_end(tmp_path):
    summary = last_json(run("train", "--set", *tiny_overrides(tmp_path)).stdout)
    for key in ("run_dir", "best_checkpoint", "test_bleu", "test_chrf", "data"):
        assert key in summary
    assert summary["data"]["train"]["read"] == 500
    ckpt = summary["best_checkpoint"]

    out = tmp_path / "translations.csv"
    res = last_json(
        run(
            "translate",
            "--checkpoint",
            ckpt,
            "--input",
            str(DATA / "tiny_test.csv"),
            "--output",
            str(out),
        ).stdout
    )
    assert res["rows"] == 40 and out.exists()
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].replace('"', "") == "id,source,translation,score,status"

    ev = last_json(
        run("evaluate", "--checkpoint", ckpt, "--input", str(DATA / "tiny_test.csv")).stdout
    )
    assert {"bleu", "chrf", "bleu_signature", "chrf_signature"} <= set(ev)
    assert ev["sentences"] == 40 and ev["bleu_signature"].startswith("nrefs:1")
