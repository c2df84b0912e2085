"""Corpus reading on a real local Ray cluster: strings stay strings, every row is accounted for."""

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job.config import VocabConfig
from job.data import classify, encode, write_rejects
from job.errors import DataError
from job.vocab import build_vocab

pytestmark = pytest.mark.integration


def write_csv(path, rows, header=("source", "target")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_numbers_and_booleans_stay_text_and_bad_rows_are_counted(ray_cluster, tmp_path):
    rows = [
        ("42", "42"),
        ("true", "vrai"),
        ("", "vide"),
        ("Save", ""),
        ("Open the file", "Ouvrir le fichier"),
        ("007", "007"),
        ("1e5", "1e5"),
    ]
    split = classify(write_csv(tmp_path / "c.csv", rows), "train", "source", "target")
    got = split.ds.take_all()
    # Ray Data keeps no row order here (none is promised before training shuffles): compare by line.
    by_line = [r["source"] for r in sorted(got, key=lambda r: r["line"])]
    assert by_line == ["42", "true", "", "Save", "Open the file", "007", "1e5"]
    assert split.counts == {"ok": 5, "empty_source": 1, "empty_target": 1}
    assert split.read == 7 == split.used + sum(v for k, v in split.counts.items() if k != "ok")

    out = tmp_path / "rejects.csv"
    assert write_rejects(split, str(out)) == 2
    with open(out, encoding="utf-8", newline="") as f:
        rejected = list(csv.DictReader(f))
    assert sorted(r["reason"] for r in rejected) == ["empty_source", "empty_target"]


def test_too_long_pairs_are_rejected_with_reason(ray_cluster, tmp_path):
    rows = [
        ("short one", "court"),
        (" ".join(["word"] * 50), "mot"),
        ("fine", " ".join(["mot"] * 50)),
    ]
    split = classify(write_csv(tmp_path / "c.csv", rows), "train", "source", "target")
    vocab = build_vocab(
        VocabConfig(type="word", vocab_size=100), [([r[0] for r in rows], [r[1] for r in rows])]
    )
    enc = encode(split, vocab, max_length=10)
    assert enc.counts == {"ok": 1, "too_long": 2}
    ok = enc.ok().take_all()
    assert len(ok) == 1 and list(ok[0]["src_ids"]) == vocab.encode_src(["short one"])[0]


def test_parquet_and_custom_column_names(ray_cluster, tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(
        pa.table({"en": ["Hello", "Bye"], "fr": ["Bonjour", "Au revoir"], "n": [1, 2]}), path
    )
    split = classify(str(path), "train", "en", "fr")
    assert split.counts == {"ok": 2}
    rows = sorted(split.ds.take_all(), key=lambda r: r["line"])
    assert [r["target"] for r in rows] == ["Bonjour", "Au revoir"]


def test_directory_of_files_is_one_corpus(ray_cluster, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    write_csv(d / "a.csv", [("a", "b")] * 3)
    write_csv(d / "b.csv", [("c", "d")] * 4)
    assert classify(str(d), "train", "source", "target").read == 7


def test_clear_errors_for_missing_path_column_and_empty_file(ray_cluster, tmp_path):
    with pytest.raises(DataError, match=r"corpus not found: .*nope\.csv"):
        classify(str(tmp_path / "nope.csv"), "train", "source", "target")
    path = write_csv(tmp_path / "c.csv", [("a", "b")], header=("en", "fr"))
    with pytest.raises(DataError) as exc:
        classify(path, "train", "source", "target")
    assert "['source', 'target']" in str(exc.value) and "['en', 'fr']" in str(exc.value)
    empty = write_csv(tmp_path / "e.csv", [])
    with pytest.raises(DataError, match="empty"):
        classify(empty, "train", "source", "target")


def test_zero_byte_file_is_named(ray_cluster, tmp_path):
    (tmp_path / "z.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"z\.csv: the file is empty"):
        classify(str(tmp_path / "z.csv"), "train", "source", "target")
