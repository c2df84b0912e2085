"""A block's rows (job.corpus.blocks): statuses, encoding, rejects and the vocabulary's sample. Pure
pyarrow, no Ray: job.corpus.prepare runs these inside Ray tasks (tested in test_prepare)."""

import csv

import pyarrow as pa

from job.config import VocabConfig
from job.corpus.blocks import (
    classify_block,
    count_status,
    encode_block,
    sample_rows,
    split_ok,
    vocab_key,
    write_rejects,
)
from job.corpus.datasource import FILE, LINE, RAW, STATUS
from job.corpus.vocab import build_vocab


def block(rows, status=None):
    n = len(rows)
    return pa.table({
        "source": [r[0] for r in rows], "target": [r[1] for r in rows],
        STATUS: status or [None] * n, RAW: [None] * n, FILE: ["c.csv"] * n,
        LINE: list(range(2, n + 2)),
    })  # fmt: skip


def test_numbers_and_booleans_stay_text_and_bad_rows_get_a_reason():
    rows = [("42", "42"), ("true", "vrai"), ("", "vide"), ("Save", ""), (None, "x"),
            ("  Open   the\tfile ", "Ouvrir"), ("x", "y")]  # fmt: skip
    status = [None] * 6 + ["wrong_field_count"]
    table = classify_block(block(rows, status), "source", "target")
    assert table.column("status").to_pylist() == [
        "ok", "ok", "empty_source", "empty_target", "missing_source", "ok", "wrong_field_count",
    ]  # fmt: skip
    assert table.column("source").to_pylist()[5] == "Open the file"
    assert count_status(table) == {"ok": 3, "empty_source": 1, "empty_target": 1,
                                   "missing_source": 1, "wrong_field_count": 1}  # fmt: skip
    ok, bad = split_ok(table)
    assert ok.num_rows == 3 and bad.num_rows == 4


def test_rejects_file_names_reason_file_and_line(tmp_path):
    table = classify_block(block([("a", "b"), ("", "c")]), "source", "target")
    _, bad = split_ok(table)
    assert write_rejects([bad], str(tmp_path / "r.csv")) == 1
    with open(tmp_path / "r.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"reason": "empty_source", "file": "c.csv", "line": "3", "source": "",
                     "target": "c", "raw": ""}]  # fmt: skip
    assert write_rejects([bad.slice(0, 0)], str(tmp_path / "none.csv")) == 0
    assert not (tmp_path / "none.csv").exists()


def test_too_long_pairs_are_rejected_with_reason():
    rows = [("short one", "court"), (" ".join(["w"] * 50), "mot"), ("fine", " ".join(["m"] * 9))]
    vocab = build_vocab(
        VocabConfig(type="word", vocab_size=100), [([r[0] for r in rows], [r[1] for r in rows])]
    )
    key, files = vocab_key(vocab)
    ok, _ = split_ok(classify_block(block(rows), "source", "target"))
    table = encode_block(ok, files, key, max_length=10)
    # a side of 9 tokens + EOS fits in 10; 50 does not
    assert table.column("status").to_pylist() == ["ok", "too_long", "ok"]
    assert table.column("src_ids").to_pylist()[0] == vocab.encode_src(["short one"])[0]


def test_the_sample_is_seeded_bounded_and_keeps_the_smallest_keys():
    table = classify_block(block([(f"s{i}", f"t{i}") for i in range(1000)]), "source", "target")
    a = sample_rows(table, rate=0.5, cap=100, seed=[1, 2])
    assert a.equals(sample_rows(table, rate=0.5, cap=100, seed=[1, 2]))
    assert not a.equals(sample_rows(table, rate=0.5, cap=100, seed=[1, 3]))
    keys = a.column("key").to_pylist()
    assert a.num_rows == 100 and keys == sorted(keys) and max(keys) < 0.5
    everything = sample_rows(table, rate=1.0, cap=10_000, seed=[1, 2])
    assert everything.num_rows == 1000
    assert keys == sorted(everything.column("key").to_pylist())[:100]
    pairs = zip(everything.column("source").to_pylist(), everything.column("target").to_pylist())
    assert all(s[1:] == t[1:] for s, t in pairs)
