"""Integration: the real pipeline on a real local Ray cluster (2 DDP workers, tiny corpus)."""

import csv
import json
import os
from pathlib import Path

import pytest

from job.config import load_config

from conftest import DATA, MESSY_REASONS, epoch_rows_and_digests, tiny_overrides

pytestmark = pytest.mark.integration


def _metrics_rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_training_writes_run_dir_metrics_and_checkpoints(tiny_run):
    cfg, summary = tiny_run
    run_dir = summary["run_dir"]
    assert run_dir == os.path.join(cfg.storage_path, cfg.name)
    for name in (
        "config.yaml",
        "vocab/vocab.json",
        "vocab/spm.model",
        "metrics.jsonl",
        "data.json",
        "summary.json",
    ):
        assert os.path.exists(os.path.join(run_dir, name)), name
    rows = _metrics_rows(run_dir)
    train_rows = [r for r in rows if "train_loss" in r]
    valid_rows = [r for r in rows if "valid_loss" in r]
    assert train_rows and len(valid_rows) == cfg.train.epochs
    for key in (
        "step",
        "epoch",
        "train_loss",
        "lr",
        "src_tokens",
        "tgt_tokens",
        "tokens_per_s",
        "elapsed_s",
    ):
        assert key in train_rows[0], key
    for key in ("valid_loss", "valid_ppl", "valid_bleu"):
        assert key in valid_rows[-1], key
    assert (
        valid_rows[-1]["valid_rows"] == summary["data"]["valid"]["used"]
    )  # every validation row scored
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
    assert summary["data"]["train"]["read"] == 500 + len(MESSY_REASONS)
    rejected = dict(summary["data"]["train"]["rejected"])
    rejected.pop("too_long", None)  # a few tiny-corpus pairs exceed data.max_length
    assert rejected == MESSY_REASONS
    from job.corpus.prepare import read_rejects

    rows = read_rejects(summary["run_dir"], "train")
    assert len(rows) == sum(summary["data"]["train"]["rejected"].values())
    assert sorted(int(r["line"]) for r in rows if r["reason"] in MESSY_REASONS) == list(
        range(502, 507)
    )
    assert summary["test_sentences"] == summary["data"]["test"]["used"]
    assert summary["test_bleu"] is not None and summary["test_chrf"] is not None


def test_workers_took_the_same_steps(tiny_run):
    """At every validation each DDP rank reports its own step count (rank_steps): all equal, and
    equal to the step rank 0 logged and checkpointed."""
    cfg, summary = tiny_run
    rows = _metrics_rows(summary["run_dir"])
    valid = [r for r in rows if "valid_loss" in r]
    assert valid
    for r in valid:
        assert r["rank_steps"] == [r["step"]] * cfg.scaling.num_workers, r
    with open(os.path.join(summary["best_checkpoint"], "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    assert state["step"] in {r["step"] for r in valid} and state["step"] > 0


def test_each_epoch_trains_every_row_once(tiny_run):
    """Two ranks whose batches run out at different steps: the epoch goes on until both have
    trained all their rows (the one that ran out joins with empty batches)."""
    cfg, summary = tiny_run
    epochs, once = epoch_rows_and_digests(summary["run_dir"])
    assert len(epochs) >= cfg.train.epochs and set(epochs) == {once}


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


def test_existing_run_dir_is_refused_without_resume(tiny_run):
    from job.config import ConfigError
    from job.pipeline import run_train

    cfg, _ = tiny_run
    with pytest.raises(ConfigError, match="--resume"):
        run_train(cfg)


def test_resume_continues_from_the_latest_checkpoint(tiny_run, capsys):
    from job.pipeline import run_train

    cfg, first = tiny_run
    before = _metrics_rows(first["run_dir"])
    last_step = max(r["step"] for r in before)
    same_data = {"data.train": cfg.data.train, "train.epochs": 3}
    more = load_config(None, tiny_overrides(cfg_tmp(cfg), **same_data))
    summary = run_train(more, resume=True)
    # the prepared data is reused: the corpus is neither read nor tokenised again
    out = capsys.readouterr().out
    assert "[data] reusing the prepared data" in out and "read and classified" not in out
    rows = _metrics_rows(summary["run_dir"])
    valid = [r for r in rows if "valid_loss" in r]
    assert len(valid) == 3 and valid[-1]["epoch"] == 3
    assert valid[-1]["step"] > last_step
    assert [r["step"] for r in rows if "valid_loss" in r][:2] == [
        r["step"] for r in before if "valid_loss" in r
    ]
    new_rows = rows[len(before) :]
    assert not any(r.get("event") == "start" for r in new_rows)  # continued, not restarted
    assert [r["step"] for r in new_rows if r.get("event") == "resume"] == [last_step]


def test_resume_refuses_changed_training_data_naming_it(tiny_run, tmp_path):
    from job.config import ConfigError
    from job.pipeline import run_train

    cfg, _ = tiny_run
    other = load_config(None, tiny_overrides(cfg_tmp(cfg)))  # data.train: the clean tiny corpus
    with pytest.raises(ConfigError, match=r"data\.train: .*train\.csv -> .*tiny_train\.csv"):
        run_train(other, resume=True)


def test_a_new_run_reuses_prepared_data_and_refuses_it_once_an_input_changed(
    ray_cluster, tiny_run, tmp_path, capsys
):
    from job.config import ConfigError
    from job.pipeline import run_train

    cfg, first = tiny_run
    prepared = os.path.join(first["run_dir"], "prepared")
    overrides = {"data.train": cfg.data.train, "data.prepared": prepared, "train.epochs": 1}
    summary = run_train(load_config(None, tiny_overrides(tmp_path, **overrides)))
    out = capsys.readouterr().out
    assert "[data] reusing the prepared data" in out and "read and classified" not in out
    assert summary["data"]["train"] == first["data"]["train"]
    with open(os.path.join(summary["run_dir"], "data.json"), encoding="utf-8") as f:
        assert json.load(f)["prepared"] == prepared

    changed = tmp_path / "train.csv"
    changed.write_bytes(Path(cfg.data.train).read_bytes() + b"one,more\n")
    overrides.update({"data.train": str(changed), "name": "other"})
    with pytest.raises(ConfigError, match=r"data\.train: .* -> .*train\.csv"):
        run_train(load_config(None, tiny_overrides(tmp_path, **overrides)))
    overrides["data.train"] = cfg.data.train
    stat = os.stat(cfg.data.train)
    os.utime(cfg.data.train)  # the same bytes, touched: refused, naming the file
    try:
        with pytest.raises(ConfigError, match=r"train\.csv: changed \(size (\d+) -> \1, modif"):
            run_train(load_config(None, tiny_overrides(tmp_path, **overrides)))
    finally:
        os.utime(cfg.data.train, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_resume_refuses_a_changed_model_shape(tiny_run):
    from job.config import ConfigError
    from job.pipeline import run_train

    cfg, _ = tiny_run
    changed = load_config(None, tiny_overrides(cfg_tmp(cfg), **{"model.hidden_size": 64}))
    with pytest.raises(ConfigError, match=r"model.hidden_size: 32 -> 64"):
        run_train(changed, resume=True)


def cfg_tmp(cfg):
    """The tmp dir a tiny run's storage_path lives in (storage_path = <tmp>/runs)."""
    return Path(cfg.storage_path).parent


def test_line_aligned_text_files_early_stopping_and_checkpoint_averaging(ray_cluster, tmp_path):
    """Train, validate and test on Moses-style pairs (corpus.en + corpus.fr.gz), no CSV; with a
    learning rate of ~0, validation BLEU cannot improve after the first validation, so patience 1
    stops the run after epoch 2, and the last two checkpoints are averaged, validated and tested."""
    import gzip

    from job.pipeline import run_train

    paths = {}
    for split in ("train", "valid", "test"):
        with open(DATA / f"tiny_{split}.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        (tmp_path / f"{split}.en").write_text("".join(r["source"] + "\n" for r in rows))
        with gzip.open(tmp_path / f"{split}.fr.gz", "wt", encoding="utf-8") as f:
            f.write("".join(r["target"] + "\n" for r in rows))
        paths[split] = (
            f"{{source: {tmp_path / f'{split}.en'}, target: {tmp_path / f'{split}.fr.gz'}}}"
        )
    overrides = {f"data.{k}": v for k, v in paths.items()}
    policies = {
        "train.epochs": 6,
        "train.early_stopping_patience": 1,
        "train.average_last": 2,
        "train.lr": 1e-9,
    }
    cfg = load_config(None, tiny_overrides(tmp_path, **overrides, **policies))
    summary = run_train(cfg)
    assert summary["data"]["train"]["read"] == 500
    assert summary["data"]["train"]["path"].endswith("train.en + " + str(tmp_path / "train.fr.gz"))
    assert summary["test_sentences"] == summary["data"]["test"]["used"] == 40
    rows = _metrics_rows(summary["run_dir"])
    stop = [r for r in rows if r.get("event") == "early_stop"]
    assert stop and stop[0]["epoch"] == 2
    averaged = [r for r in rows if r.get("averaged")]
    assert len(averaged) == 1 and averaged[0]["averaged"] == 2 and "valid_bleu" in averaged[0]
