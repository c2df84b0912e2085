"""Integration: the real pipeline on a real local Ray cluster (2 DDP workers, tiny corpus)."""

import csv
import json
import os

import pyarrow.parquet as pq
import pytest

from conftest import DATA, ROOT, tiny_overrides
from job.config import load_config

pytestmark = pytest.mark.integration


MESSY_ROWS = b'one,two\n"never closed,x,y\nbad\xff,byte,z\n,empty source,z\nsource,target,origin\n'
MESSY_REASONS = {"wrong_field_count": 1, "unterminated_quote": 1, "invalid_utf8": 1, "empty_source": 1, "duplicate_header": 1}


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tmp_path_factory):
    from job.pipeline import run_train

    tmp = tmp_path_factory.mktemp("tiny")
    # The tiny corpus plus rows nobody cleaned: they are counted and set aside, training goes on.
    train = tmp / "train.csv"
    train.write_bytes((DATA / "tiny_train.csv").read_bytes() + MESSY_ROWS)
    cfg = load_config(None, tiny_overrides(tmp, **{"data.train": str(train)}))
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
    assert summary["data"]["train"]["read"] == 500 + len(MESSY_REASONS)
    rejected = dict(summary["data"]["train"]["rejected"])
    rejected.pop("too_long", None)  # a few tiny-corpus pairs exceed data.max_length
    assert rejected == MESSY_REASONS
    rows = list(csv.DictReader(open(os.path.join(summary["run_dir"], "rejects", "train.csv"), encoding="utf-8")))
    assert len(rows) == sum(summary["data"]["train"]["rejected"].values())
    assert sorted(int(r["line"]) for r in rows if r["reason"] in MESSY_REASONS) == list(range(502, 507))
    assert summary["test_sentences"] == summary["data"]["test"]["used"]
    assert summary["test_bleu"] is not None and summary["test_chrf"] is not None


def test_workers_took_the_same_steps(tiny_run):
    """Rank 0 logs; the checkpoint's step equals the last logged step count on every worker
    (a worker taking extra steps would have hung the all-reduce, failing the run)."""
    _, summary = tiny_run
    state = json.load(open(os.path.join(summary["best_checkpoint"], "state.json")))
    assert state["step"] > 0 and state["epoch"] >= 1


def test_bulk_translate_one_row_per_input_row_ids_kept(tiny_run, tmp_path):
    from job.translate import bulk_translate

    _, summary = tiny_run
    out = tmp_path / "out.parquet"
    res = bulk_translate(summary["best_checkpoint"], str(DATA / "tiny_test.csv"), str(out), num_actors=2, batch_size=8,
                         part_rows=7, progress=False)
    table = pq.read_table(out)
    inputs = list(csv.DictReader(open(DATA / "tiny_test.csv", encoding="utf-8")))
    assert res["rows"] == table.num_rows == len(inputs) and res["parts"] == 6  # 40 rows in parts of 7
    assert table.column("id").to_pylist() == [r["id"] for r in inputs]  # the input's id column, in order
    assert table.column("source").to_pylist() == [r["source"] for r in inputs]
    assert table.column_names == ["id", "source", "translation", "score", "status"]
    assert not os.path.exists(str(out) + ".parts")


def test_bulk_translate_keeps_every_row_with_a_status(tiny_run, tmp_path):
    from job.translate import bulk_translate

    _, summary = tiny_run
    src = tmp_path / "in.csv"
    src.write_bytes(b'source\nSave the file\n""\n42\ntrue\nbad\xff byte\n"never closed\nlast\n')
    out = tmp_path / "out.csv"
    res = bulk_translate(summary["best_checkpoint"], str(src), str(out), num_actors=1, progress=False)
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [r["source"] for r in rows] == ["Save the file", "", "42", "true", "bad\\xff byte", '"never closed', "last"]
    assert [r["status"] for r in rows] == ["ok", "empty_source", "ok", "ok", "invalid_utf8", "unterminated_quote", "ok"]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]  # no id column: row numbers
    assert res["rows"] == 7 and res["status"] == {"ok": 4, "empty_source": 1, "invalid_utf8": 1, "unterminated_quote": 1}


def test_bulk_translate_parquet_and_text_inputs(tiny_run, tmp_path):
    import pyarrow as pa

    from job.translate import bulk_translate

    _, summary = tiny_run
    pq.write_table(pa.table({"key": [10, 20, 30], "en": ["Open", "Close", "Save"]}), tmp_path / "in.parquet")
    res = bulk_translate(summary["best_checkpoint"], str(tmp_path / "in.parquet"), str(tmp_path / "o1.parquet"),
                         column="en", id_column="key", progress=False)
    table = pq.read_table(tmp_path / "o1.parquet")
    assert table.column("id").to_pylist() == [10, 20, 30] and res["status"] == {"ok": 3}  # int ids stay ints
    (tmp_path / "in.txt").write_text("Open\n\nSave\n", encoding="utf-8")
    res = bulk_translate(summary["best_checkpoint"], str(tmp_path / "in.txt"), str(tmp_path / "o2.parquet"), progress=False)
    assert pq.read_table(tmp_path / "o2.parquet").column("status").to_pylist() == ["ok", "empty_source", "ok"]


def test_bulk_translate_resumes_without_redoing_or_duplicating(tiny_run, tmp_path):
    """Parts written before an interruption are kept; only the missing ones are translated."""
    from job.data import DataError
    from job.translate import bulk_translate

    _, summary = tiny_run
    out = tmp_path / "out"
    kw = dict(num_actors=1, batch_size=8, part_rows=10, progress=False, output_format="csv")
    first = bulk_translate(summary["best_checkpoint"], str(DATA / "tiny_test.csv"), str(out), **kw)
    assert first["parts_written"] == 4 and first["rows"] == 40
    names = sorted(os.listdir(out))
    assert names == ["_SUCCESS.json", "_job.json"] + [f"part-00000-{i:06d}.csv" for i in range(4)]

    def parts():
        rows = [r for n in names if n.startswith("part-") for r in csv.DictReader(open(out / n, encoding="utf-8"))]
        # Scores are float sums: another batch composition may change their last bits.
        return [(r["id"], r["source"], r["translation"], r["status"]) for r in rows], [float(r["score"]) for r in rows]

    full, scores = parts()
    # As if the run had died while writing part 2 and before part 3: a leftover temporary file.
    os.remove(out / "part-00000-000002.csv")
    os.remove(out / "part-00000-000003.csv")
    os.remove(out / "_SUCCESS.json")
    (out / "part-00000-000002.csv.tmp-deadbeef").write_text("half a part", encoding="utf-8")
    again = bulk_translate(summary["best_checkpoint"], str(DATA / "tiny_test.csv"), str(out), **kw)
    assert (again["parts_resumed"], again["parts_written"], again["rows"]) == (2, 2, 40)
    assert sorted(os.listdir(out)) == names
    again_rows, again_scores = parts()
    assert again_rows == full and again_scores == pytest.approx(scores, abs=1e-4)
    with pytest.raises(DataError, match="different translation job .*beam"):
        bulk_translate(summary["best_checkpoint"], str(DATA / "tiny_test.csv"), str(out), beam=2, **kw)


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
    assert "| train | 505 |" in md and "Best validation BLEU" in md and "![loss.png](loss.png)" in md
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


@pytest.mark.slow
def test_translate_command_killed_mid_run_resumes_without_duplicates(tiny_run, tmp_path):
    """A real interruption: SIGKILL the translate command once some parts are written, run the
    same command again, get every row exactly once, in order."""
    import signal
    import subprocess
    import sys
    import time

    _, summary = tiny_run
    rows = list(csv.DictReader(open(DATA / "tiny_test.csv", encoding="utf-8")))
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "source"])
        for i in range(20000):
            w.writerow([f"r{i}", rows[i % len(rows)]["source"]])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "job", "translate", "--checkpoint", summary["best_checkpoint"], "--input", str(src),
           "--output", str(out), "--part-rows", "500", "--beam", "4", "--actors", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and sum(n.startswith("part-") and n.endswith(".parquet") for n in os.listdir(out)) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the command finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
    proc.wait()
    written = sorted(n for n in os.listdir(out) if n.startswith("part-") and n.endswith(".parquet"))
    assert 3 <= len(written) < 40 and not (out / "_SUCCESS.json").exists()

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["rows"] == 20000 and res["parts"] == 40 and res["parts_resumed"] >= len(written)
    assert res["parts_resumed"] + res["parts_written"] == 40
    table = pq.read_table(out, columns=["id"])
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(20000)]  # no duplicates, none lost, in order
