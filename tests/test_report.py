"""Run reports (job.report): plots and a Markdown summary of the shared trained tiny run."""

import json
import os

import pytest

from job.errors import ReportError
from job.report import make_report, plot_curves

pytestmark = pytest.mark.integration


def test_report_writes_plots_and_summary(tiny_run):
    from PIL import Image

    _, summary = tiny_run
    rep = make_report(summary["run_dir"])
    names = sorted(os.path.basename(p) for p in rep["images"])
    assert names == [
        "attention.png",
        "bleu.png",
        "loss.png",
        "lr.png",
        "perplexity.png",
        "throughput.png",
    ]
    for p in rep["images"]:
        with Image.open(p) as im:
            assert im.size[0] >= 500 and im.size[1] >= 300
    with open(rep["summary"], encoding="utf-8") as f:
        md = f.read()
    with open(os.path.join(summary["run_dir"], "data.json"), encoding="utf-8") as f:
        read = json.load(f)["train"]["read"]  # 505 (a later --resume test may rewrite it)
    assert f"| train | {read} |" in md
    assert "Best validation BLEU" in md and "![loss.png](loss.png)" in md
    assert os.path.isdir(os.path.join(summary["run_dir"], "tensorboard"))


def test_curves_from_rows_alone(tmp_path):
    rows = [
        {"step": s, "train_loss": 5.0 / s, "train_ppl": 2.0, "lr": 1e-3, "tokens_per_s": 100.0}
        for s in (1, 2, 3)
    ]
    rows.append(
        {
            "step": 3,
            "epoch": 1,
            "valid_loss": 1.0,
            "valid_ppl": 2.7,
            "valid_bleu": 5.0,
            "valid_chrf": 20.0,
        }
    )
    made = plot_curves(rows, str(tmp_path))
    assert sorted(os.path.basename(p) for p in made) == [
        "bleu.png",
        "loss.png",
        "lr.png",
        "perplexity.png",
        "throughput.png",
    ]
    assert all(os.path.getsize(p) > 1000 for p in made)


def test_not_a_run_directory(tmp_path):
    (tmp_path / "metrics.txt").write_text(json.dumps({}))
    with pytest.raises(ReportError, match=r"no metrics\.jsonl"):
        make_report(str(tmp_path))
    with pytest.raises(ReportError, match="local run directory"):
        make_report("gs://bucket/runs/sample")
