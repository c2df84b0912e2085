"""Integration: the real pipeline on a real local Ray cluster (2 DDP workers, tiny corpus)."""

import csv
import json
import os

import pyarrow.parquet as pq
import pytest

from conftest import DATA, tiny_overrides
from job.config import load_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tmp_path_factory):
    from job.pipeline import run_train

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = load_config(None, tiny_overrides(tmp))
    summary = run_train(cfg)
    return cfg, summary


def test_training_writes_run_dir_metrics_and_checkpoints(tiny_run):
    cfg, summary = tiny_run
    run_dir = summary["run_dir"]
    assert run_dir == os.path.join(cfg.storage_path, cfg.name)
    for name in ("config.yaml", "vocab/vocab.json", "vocab/spm.model", "metrics.jsonl", "data.json", "summary.json"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    train_rows = [r for r in rows if "train_loss" in r]
    valid_rows = [r for r in rows if "valid_loss" in r]
    assert train_rows and len(valid_rows) == cfg.train.epochs
    for key in ("step", "epoch", "train_loss", "lr", "src_tokens", "tgt_tokens", "tokens_per_s", "elapsed_s"):
        assert key in train_rows[0], key
    for key in ("valid_loss", "valid_ppl", "valid_bleu"):
        assert key in valid_rows[-1], key
    assert valid_rows[-1]["valid_rows"] == summary["data"]["valid"]["used"]  # every validation row scored
    steps = [r["step"] for r in train_rows]
    assert steps == sorted(steps)
    ckpts = [d for d in os.listdir(run_dir) if d.startswith("checkpoint_")]
    assert ckpts
    best = summary["best_checkpoint"]
    for name in ("model.pt", "optimizer.pt", "state.json", "config.yaml", "vocab/spm.model"):
        assert os.path.exists(os.path.join(best, name)), name


def test_data_counts_add_up(tiny_run):
    _, summary = tiny_run
    for split in ("train", "valid", "test"):
        d = summary["data"][split]
        assert d["read"] == d["used"] + sum(d["rejected"].values())
    assert summary["data"]["train"]["read"] == 500
    assert summary["test_sentences"] == summary["data"]["test"]["used"]
    assert summary["test_bleu"] is not None and summary["test_chrf"] is not None


def test_workers_took_the_same_steps(tiny_run):
    """Rank 0 logs; the checkpoint's step equals the last logged step count on every worker
    (a worker taking extra steps would have hung the all-reduce, failing the run)."""
    _, summary = tiny_run
    state = json.load(open(os.path.join(summary["best_checkpoint"], "state.json")))
    assert state["step"] > 0 and state["epoch"] >= 1


def test_bulk_translate_one_row_per_input_row_ids_kept(tiny_run, tmp_path):
    from job.translate import bulk_translate, read_for_translation

    _, summary = tiny_run
    ds = read_for_translation(str(DATA / "tiny_test.csv"), "source", [])
    out = tmp_path / "out.parquet"
    res = bulk_translate(summary["best_checkpoint"], ds, str(out), id_column="id", num_actors=2, batch_size=8, progress=False)
    table = pq.read_table(out)
    inputs = list(csv.DictReader(open(DATA / "tiny_test.csv", encoding="utf-8")))
    assert res["rows"] == table.num_rows == len(inputs)
    assert table.column("id").to_pylist() == [r["id"] for r in inputs]
    assert table.column("source").to_pylist() == [r["source"] for r in inputs]
    assert set(table.column_names) >= {"id", "source", "translation", "score", "status"}


def test_bulk_translate_keeps_empty_rows_with_a_status(tiny_run, tmp_path):
    from job.translate import bulk_translate, read_for_translation

    _, summary = tiny_run
    src = tmp_path / "in.csv"
    src.write_text("source\nSave the file\n\"\"\n42\ntrue\n", encoding="utf-8")
    ds = read_for_translation(str(src), "source", [])
    out = tmp_path / "out.csv"
    bulk_translate(summary["best_checkpoint"], ds, str(out), num_actors=1, progress=False)
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [r["source"] for r in rows] == ["Save the file", "", "42", "true"]
    assert [r["status"] for r in rows] == ["ok", "empty_source", "ok", "ok"]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]


def test_python_api_translates_with_scores(tiny_run):
    from job import Translation, Translator

    _, summary = tiny_run
    t = Translator.from_checkpoint(summary["best_checkpoint"])
    greedy = t.translate(["Save the file", "Cannot open %s", ""], beam=1)
    beam = t.translate(["Save the file", "Cannot open %s", ""], beam=4)
    for out in (greedy, beam):
        assert len(out) == 3 and all(isinstance(x, Translation) for x in out)
        assert [x.status for x in out] == ["ok", "ok", "empty_source"]
        assert all(x.score <= 0 for x in out[:2])


def test_report_writes_plots_and_summary(tiny_run):
    from PIL import Image

    from job.report import make_report

    _, summary = tiny_run
    rep = make_report(summary["run_dir"])
    names = sorted(os.path.basename(p) for p in rep["images"])
    assert names == ["attention.png", "bleu.png", "loss.png", "lr.png", "perplexity.png", "throughput.png"]
    for p in rep["images"]:
        with Image.open(p) as im:
            assert im.size[0] >= 500 and im.size[1] >= 300
    md = open(rep["summary"], encoding="utf-8").read()
    assert "| train | 500 |" in md and "Best validation BLEU" in md and "![loss.png](loss.png)" in md
    assert os.path.isdir(os.path.join(summary["run_dir"], "tensorboard"))


def test_existing_run_dir_is_refused_without_resume(tiny_run):
    from job.config import ConfigError
    from job.pipeline import run_train

    cfg, _ = tiny_run
    with pytest.raises(ConfigError, match="--resume"):
        run_train(cfg)


def test_resume_continues_from_the_latest_checkpoint(tiny_run):
    from job.pipeline import run_train

    cfg, first = tiny_run
    before = [json.loads(line) for line in open(os.path.join(first["run_dir"], "metrics.jsonl"))]
    last_step = max(r["step"] for r in before)
    more = load_config(None, tiny_overrides(cfg_tmp(cfg), **{"train.epochs": 3}))
    summary = run_train(more, resume=True)
    rows = [json.loads(line) for line in open(os.path.join(summary["run_dir"], "metrics.jsonl"))]
    valid = [r for r in rows if "valid_loss" in r]
    assert len(valid) == 3 and valid[-1]["epoch"] == 3
    assert valid[-1]["step"] > last_step
    assert [r["step"] for r in rows if "valid_loss" in r][:2] == [r["step"] for r in before if "valid_loss" in r]
    new_rows = rows[len(before):]
    assert not any(r.get("event") == "start" for r in new_rows)  # continued, not restarted
    assert [r["step"] for r in new_rows if r.get("event") == "resume"] == [last_step]


def test_resume_refuses_a_changed_model_shape(tiny_run):
    from job.config import ConfigError
    from job.pipeline import run_train

    cfg, _ = tiny_run
    changed = load_config(None, tiny_overrides(cfg_tmp(cfg), **{"model.hidden_size": 64}))
    with pytest.raises(ConfigError, match=r"model.hidden_size: 32 -> 64"):
        run_train(changed, resume=True)


def test_early_stopping_and_checkpoint_averaging(ray_cluster, tmp_path):
    from job.pipeline import run_train

    cfg = load_config(None, tiny_overrides(tmp_path, **{
        "train.epochs": 6, "train.early_stopping_patience": 1, "train.average_last": 2, "train.lr": 1e-9,
        "data.test": "null"}))
    summary = run_train(cfg)
    rows = [json.loads(line) for line in open(os.path.join(summary["run_dir"], "metrics.jsonl"))]
    stop = [r for r in rows if r.get("event") == "early_stop"]
    assert stop and stop[0]["epoch"] == 2  # lr ~0: BLEU cannot improve after the first validation
    averaged = [r for r in rows if r.get("averaged")]
    assert len(averaged) == 1 and averaged[0]["averaged"] == 2 and "valid_bleu" in averaged[0]
    assert summary["test_bleu"] is None


def cfg_tmp(cfg):
    """The tmp dir a tiny run's storage_path lives in (storage_path = <tmp>/runs)."""
    from pathlib import Path

    return Path(cfg.storage_path).parent
