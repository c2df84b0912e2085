"""metrics.jsonl (job.metrics): writer, reader, console lines, the progress printer."""

import io
import json

import pytest

from job.errors import ReportError
from job.metrics import METRICS_FILE, ConsoleLines, MetricsLog, ProgressPrinter, improves, read_rows

TRAIN = {"step": 50, "epoch": 0.5, "train_loss": 3.2, "train_ppl": 24.5, "lr": 1e-3,
         "tokens_per_s": 1234.0, "elapsed_s": 10.0, "progress": 0.25}  # fmt: skip


def test_rows_round_trip_and_resume_drops_later_steps(tmp_path):
    log = MetricsLog(str(tmp_path), resume_step=0)
    for step in (0, 50, 100, 150):
        log.add({"step": step, "train_loss": 1.0})
    assert [r["step"] for r in read_rows(str(tmp_path))] == [0, 50, 100, 150]
    again = MetricsLog(str(tmp_path), resume_step=100)  # steps after 100 are trained again
    again.add({"step": 100, "event": "resume"})
    assert [r["step"] for r in read_rows(str(tmp_path))] == [0, 50, 100, 100]


def test_a_new_run_starts_a_new_file(tmp_path):
    (tmp_path / METRICS_FILE).write_text(json.dumps({"step": 9}) + "\n")
    MetricsLog(str(tmp_path), resume_step=0).add({"step": 0, "event": "start"})
    assert read_rows(str(tmp_path)) == [{"step": 0, "event": "start"}]


def test_reading_a_directory_without_metrics_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match=r"no metrics\.jsonl"):
        read_rows(str(tmp_path))


def test_improves_is_strict_and_ignores_missing_scores():
    assert improves(1.0, None) and improves(2.0, 1.0)
    assert not improves(1.0, 1.0) and not improves(0.5, 1.0) and not improves(None, 1.0)


def test_console_lines_for_each_kind_of_row():
    lines = ConsoleLines(total_epochs=4)
    start = {"step": 0, "event": "start", "parameters": 1234567, "workers": 2, "device": "cpu",
             "nodes": ["a", "a"]}  # fmt: skip
    assert lines.format(start) == "[train] 1,234,567 parameters, 2 worker(s) on cpu, 1 node(s)"
    assert lines.format({**start, "event": "resume", "step": 40}).startswith(
        "[train] resumed at step 40: "
    )
    train = lines.format(TRAIN)
    assert "epoch 0.50/4 step 50/~200" in train and "loss 3.200" in train and "eta 30s" in train
    valid = {
        "step": 100,
        "epoch": 1,
        "valid_loss": 2.0,
        "valid_ppl": 7.39,
        "valid_bleu": 20.0,
        "valid_chrf": 40.0,
    }
    assert lines.format(valid).endswith("BLEU 20.00  chrF 40.00  best BLEU 20.00")
    worse = lines.format({**valid, "valid_bleu": 10.0})
    assert "BLEU 10.00" in worse and worse.endswith("best BLEU 20.00")
    assert lines.format({**valid, "averaged": 3}).startswith(
        "[valid] mean of the last 3 checkpoints"
    )
    stop = lines.format({"step": 1, "epoch": 3, "event": "early_stop", "patience": 2})
    assert stop == "[train] early stop at epoch 3: no better validation BLEU for 2 validations"


def test_printer_prints_each_new_row_once_and_follows_a_rewrite(tmp_path):
    out = io.StringIO()
    printer = ProgressPrinter(str(tmp_path), total_epochs=1, out=out)
    log = MetricsLog(str(tmp_path), resume_step=0)
    log.add(TRAIN)
    printer.poll()
    printer.poll()
    assert out.getvalue().count("[train] epoch") == 1
    log.add({**TRAIN, "step": 100})
    printer.poll()
    assert out.getvalue().count("[train] epoch") == 2
    (tmp_path / METRICS_FILE).write_text(json.dumps(TRAIN) + "\n")  # a restart rewrote it shorter
    log2 = MetricsLog(str(tmp_path), resume_step=50)
    log2.add({**TRAIN, "step": 60})
    printer.poll()
    assert "step 60/" in out.getvalue().splitlines()[-1]
