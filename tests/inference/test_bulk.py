"""Bulk translation (job.inference.bulk) on a real local Ray cluster with a trained tiny
checkpoint: one output row per input row, in order, ids kept, bad rows with a status, resumable
parts."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job.errors import DataError
from job.inference.bulk import BulkOptions, actor_resources, bulk_translate

from conftest import DATA, ROOT

pytestmark = pytest.mark.integration


def _csv_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_bulk_translate_one_row_per_input_row_ids_kept(tiny_run, tmp_path):
    _, summary = tiny_run
    out = tmp_path / "out.parquet"
    res = bulk_translate(
        summary["best_checkpoint"],
        str(DATA / "tiny_test.csv"),
        str(out),
        num_actors=2,
        batch_size=8,
        part_rows=7,
        progress=False,
    )
    table = pq.read_table(out)
    inputs = _csv_rows(DATA / "tiny_test.csv")
    assert (
        res["rows"] == table.num_rows == len(inputs) and res["parts"] == 6
    )  # 40 rows in parts of 7
    assert table.column("id").to_pylist() == [
        r["id"] for r in inputs
    ]  # the input's id column, in order
    assert table.column("source").to_pylist() == [r["source"] for r in inputs]
    assert table.column_names == ["id", "source", "translation", "score", "status"]
    assert not os.path.exists(str(out) + ".parts")


def test_bulk_translate_keeps_every_row_with_a_status(tiny_run, tmp_path):
    _, summary = tiny_run
    src = tmp_path / "in.csv"
    src.write_bytes(b'source\nSave the file\n""\n42\ntrue\nbad\xff byte\n"never closed\nlast\n')
    out = tmp_path / "out.csv"
    res = bulk_translate(
        summary["best_checkpoint"], str(src), str(out), num_actors=1, progress=False
    )
    rows = _csv_rows(out)
    assert [r["source"] for r in rows] == [
        "Save the file",
        "",
        "42",
        "true",
        "bad\\xff byte",
        '"never closed',
        "last",
    ]
    assert [r["status"] for r in rows] == [
        "ok",
        "empty_source",
        "ok",
        "ok",
        "invalid_utf8",
        "unterminated_quote",
        "ok",
    ]
    assert [r["id"] for r in rows] == [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]  # no id column: row numbers
    assert res["rows"] == 7 and res["status"] == {
        "ok": 4,
        "empty_source": 1,
        "invalid_utf8": 1,
        "unterminated_quote": 1,
    }


def test_bulk_translate_parquet_and_text_inputs(tiny_run, tmp_path):
    _, summary = tiny_run
    pq.write_table(
        pa.table({"key": [10, 20, 30], "en": ["Open", "Close", "Save"]}), tmp_path / "in.parquet"
    )
    res = bulk_translate(
        summary["best_checkpoint"],
        str(tmp_path / "in.parquet"),
        str(tmp_path / "o1.parquet"),
        column="en",
        id_column="key",
        progress=False,
    )
    table = pq.read_table(tmp_path / "o1.parquet")
    assert table.column("id").to_pylist() == [10, 20, 30] and res["status"] == {
        "ok": 3
    }  # int ids stay ints
    (tmp_path / "in.txt").write_text("Open\n\nSave\n", encoding="utf-8")
    res = bulk_translate(
        summary["best_checkpoint"],
        str(tmp_path / "in.txt"),
        str(tmp_path / "o2.parquet"),
        progress=False,
    )
    assert pq.read_table(tmp_path / "o2.parquet").column("status").to_pylist() == [
        "ok",
        "empty_source",
        "ok",
    ]


def test_bulk_translate_resumes_without_redoing_or_duplicating(tiny_run, tmp_path):
    """Parts written before an interruption are kept; only the missing ones are translated."""
    _, summary = tiny_run
    out = tmp_path / "out"
    kw = {
        "num_actors": 1,
        "batch_size": 8,
        "part_rows": 10,
        "progress": False,
        "output_format": "csv",
    }
    first = bulk_translate(summary["best_checkpoint"], str(DATA / "tiny_test.csv"), str(out), **kw)
    assert first["parts_written"] == 4 and first["rows"] == 40
    names = sorted(os.listdir(out))
    assert names == ["_SUCCESS.json", "_job.json"] + [f"part-00000-{i:06d}.csv" for i in range(4)]

    def parts():
        rows = [r for n in names if n.startswith("part-") for r in _csv_rows(out / n)]
        # Scores are float sums: another batch composition may change their last bits.
        return [(r["id"], r["source"], r["translation"], r["status"]) for r in rows], [
            float(r["score"]) for r in rows
        ]

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
    with pytest.raises(DataError, match=r"different translation job .*beam"):
        bulk_translate(
            summary["best_checkpoint"], str(DATA / "tiny_test.csv"), str(out), beam=2, **kw
        )


@pytest.mark.slow
def test_translate_command_killed_mid_run_resumes_without_duplicates(tiny_run, tmp_path):
    """A real interruption: SIGKILL the translate command once some parts are written, run the
    same command again, get every row exactly once, in order."""
    _, summary = tiny_run
    rows = _csv_rows(DATA / "tiny_test.csv")
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "source"])
        for i in range(8000):
            w.writerow([f"r{i}", rows[i % len(rows)]["source"]])
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "job",
        "translate",
        "--checkpoint",
        summary["best_checkpoint"],
        "--input",
        str(src),
        "--output",
        str(out),
        "--part-rows",
        "200",
        "--beam",
        "4",
        "--actors",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (
            out.exists()
            and sum(n.startswith("part-") and n.endswith(".parquet") for n in os.listdir(out)) >= 3
        ):
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
    assert res["rows"] == 8000 and res["parts"] == 40 and res["parts_resumed"] >= len(written)
    assert res["parts_resumed"] + res["parts_written"] == 40
    table = pq.read_table(out, columns=["id"])
    assert table.column("id").to_pylist() == [
        f"r{i}" for i in range(8000)
    ]  # no duplicates, none lost, in order


def test_options_object_and_keyword_overrides_agree(tiny_run, tmp_path):
    """BulkOptions fields given as keywords override the options object, and only those."""
    _, summary = tiny_run
    opts = BulkOptions(num_actors=1, batch_size=8, beam=1, progress=False, output_format="csv")
    ckpt, src = summary["best_checkpoint"], str(DATA / "tiny_test.csv")
    a = bulk_translate(ckpt, src, str(tmp_path / "a"), opts)
    b = bulk_translate(ckpt, src, str(tmp_path / "b"), opts, beam=2)
    assert a["rows"] == b["rows"] == 40
    jobs = [json.loads((tmp_path / d / "_job.json").read_text()) for d in "ab"]
    assert (jobs[0]["beam"], jobs[1]["beam"]) == (1, 2)
    assert jobs[0]["format"] == jobs[1]["format"] == "csv"


def test_actor_resources_leave_room_for_read_tasks(ray_cluster):
    import ray

    cpus = sum(n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive"))
    for actors in (1, 2, 3):
        share = actor_resources(actors, use_gpu=False)["num_cpus"]
        assert share * actors <= cpus - 0.25 + 1e-9  # a quarter CPU stays free for the reads
    assert actor_resources(4, use_gpu=True) == {"num_gpus": 1, "num_cpus": 0}


def test_score_keeps_every_row_with_a_status_and_matches_the_python_api(tiny_run, tmp_path):
    from job.inference.bulk import bulk_score
    from job.inference.translator import Translator

    _, summary = tiny_run
    src = tmp_path / "pairs.csv"
    src.write_bytes(
        b"source,target\nSave the file,Enregistrer le fichier\n,vide\nOpen,\n"
        b'bad\xff byte,x\n"never closed,x\nOne,two,three\nClose,Fermer\n'
    )
    out = tmp_path / "scores.csv"
    res = bulk_score(summary["best_checkpoint"], str(src), str(out), num_actors=1, progress=False)
    rows = _csv_rows(out)
    assert [r["status"] for r in rows] == [
        "ok", "empty_source", "empty_target", "invalid_utf8", "unterminated_quote",
        "wrong_field_count", "ok",
    ]  # fmt: skip
    assert res["rows"] == 7 and [r["id"] for r in rows] == [str(i) for i in range(7)]
    assert list(rows[0]) == [
        "id",
        "source",
        "target",
        "score",
        "score_per_token",
        "tokens",
        "status",
    ]
    t = Translator.from_checkpoint(summary["best_checkpoint"])
    direct = t.score(["Save the file", "Close"], ["Enregistrer le fichier", "Fermer"])
    got = [rows[0], rows[6]]
    assert [float(r["score"]) for r in got] == pytest.approx([d.score for d in direct], abs=1e-4)
    assert [int(r["tokens"]) for r in got] == [d.tokens for d in direct]
    assert float(got[0]["score_per_token"]) == pytest.approx(direct[0].score / direct[0].tokens)


@pytest.fixture(scope="module")
def word_checkpoint(tmp_path_factory):
    """An untrained word-vocabulary checkpoint: its translations are long and never empty, and a
    translation's words re-encode to the decoded ids (unless it produced <unk>)."""
    import torch

    from job.checkpoint import write_checkpoint
    from job.config import load_config
    from job.corpus.vocab import build_vocab
    from job.model.seq2seq import build_model

    rows = _csv_rows(DATA / "tiny_train.csv")
    overrides = ["vocab.type=word", "vocab.vocab_size=300", "model.share_embeddings=false"]
    cfg = load_config(None, [*overrides, "model.embedding_dim=16", "model.hidden_size=16"])
    vocab = build_vocab(cfg.vocab, [([r["source"] for r in rows], [r["target"] for r in rows])])
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab.src_size, vocab.tgt_size)
    d = tmp_path_factory.mktemp("word") / "ckpt"
    write_checkpoint(str(d), model, None, {"step": 0}, cfg, vocab)
    return str(d)


def test_score_of_translations_reproduces_their_scores(ray_cluster, word_checkpoint, tmp_path):
    """Scoring translate's own output gives back the score translate reported (1e-4)."""
    from job.corpus.vocab import UNK
    from job.inference.bulk import bulk_score
    from job.inference.translator import Translator
    from job.model.search import decode_ids

    translated = tmp_path / "translated.parquet"
    for beam in (4,):  # greedy and sampling: tests/test_scoring.py
        bulk_translate(word_checkpoint, str(DATA / "tiny_test.csv"), str(translated), beam=beam,
                       num_actors=2, alignments=True, progress=False)  # fmt: skip
        table = pq.read_table(translated)
        pairs = tmp_path / "pairs.parquet"
        text = {"source": table.column("source"), "target": table.column("translation")}
        pq.write_table(pa.table(text), pairs)
        scored = tmp_path / "scored.parquet"
        bulk_score(word_checkpoint, str(pairs), str(scored), num_actors=2, progress=False)
        got = pq.read_table(scored).to_pylist()
        assert all(r["status"] == "ok" for r in got)
        # a translation with <unk> re-encodes differently (decoding drops it): leave those out
        t = Translator.from_checkpoint(word_checkpoint)
        ids = t.vocab.encode_src(table.column("source").to_pylist())
        limits = {"max_src_len": t.cfg.data.max_length, "max_length_ratio": 2.0}
        decoded = decode_ids(t.model, ids, batch_size=128, beam=beam, **limits)
        texts = t.vocab.decode_tgt(decoded.ids)
        # (a near-tie in the beam may break the other way in another batch: skip such a row)
        same = [x == y for x, y in zip(texts, table.column("translation").to_pylist())]
        assert sum(same) >= 36
        keep = [i for i, x in enumerate(decoded.ids) if same[i] and UNK not in x]
        assert len(keep) >= 20
        reported = table.column("score").to_pylist()
        assert [got[i]["score"] for i in keep] == pytest.approx(
            [reported[i] for i in keep], abs=1e-4
        )
        (tmp_path / "scored.parquet").unlink()
        translated.unlink()


def test_the_same_seed_samples_the_same_with_one_or_two_actors(
    ray_cluster, word_checkpoint, tmp_path
):
    ckpt, src = word_checkpoint, str(DATA / "tiny_test.csv")

    def sample(name, **kw):
        out = tmp_path / f"{name}.parquet"
        bulk_translate(ckpt, src, str(out), sampling="topk:8", progress=False, **kw)
        return pq.read_table(out).column("translation").to_pylist()

    one = sample("one", num_actors=1, batch_size=4, seed=7)
    two = sample("two", num_actors=2, batch_size=16, seed=7, part_rows=9)
    assert one == two and len(one) == 40  # another seed, other samples: tests/test_scoring.py
    assert len(set(one)) > 30  # real, varied samples (an untrained model: long random text)
    # the rows in reverse order, in another file: each row's sample follows its id
    rows = _csv_rows(DATA / "tiny_test.csv")
    reversed_csv = tmp_path / "reversed.csv"
    with open(reversed_csv, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[::-1])
    out = tmp_path / "reversed.parquet"
    bulk_translate(ckpt, str(reversed_csv), str(out), sampling="topk:8", seed=7, progress=False)
    back = pq.read_table(out)
    by_id = dict(zip(back.column("id").to_pylist(), back.column("translation").to_pylist()))
    assert [by_id[r["id"]] for r in rows] == one


def test_nbest_and_alignments_as_list_columns(ray_cluster, word_checkpoint, tmp_path):
    ckpt, src = word_checkpoint, str(DATA / "tiny_test.csv")
    out = tmp_path / "nbest.parquet"
    bulk_translate(ckpt, src, str(out), beam=4, nbest=3, alignments=True, progress=False)
    table = pq.read_table(out)
    assert table.schema.field("nbest_translations").type == pa.list_(pa.string())
    assert table.schema.field("alignment").type == pa.list_(pa.int32())
    for row in table.to_pylist():
        assert 1 <= len(row["nbest_translations"]) == len(row["nbest_scores"]) <= 3
        assert row["nbest_translations"][0] == row["translation"]
        assert row["nbest_scores"][0] == pytest.approx(row["score"])  # ranked by length-
        # normalised score, so the raw log-probabilities after the first need not be sorted
        # one source position per output token (<unk> tokens are not in the text)
        assert len(row["alignment"]) >= len(row["translation"].split()) > 0


def test_small_inputs_are_cut_into_a_block_per_actor():
    from job.inference.bulk import block_rows

    assert block_rows(3000, 8, 128) == 375
    assert block_rows(1_000_000, 8, 128) == 1024  # large inputs: 8 decoding batches a block
    assert block_rows(None, 8, 256) == 2048  # unknown size (remote or compressed input)
    assert block_rows(20, 4, 128) == 16
