"""The two preparation passes (job.corpus.prepare) on a real local Ray cluster: counts, Parquet
parts, rejects written by the tasks, the vocabulary's bounded sample, the CSV fallback."""

import pytest

from job.config import VocabConfig
from job.corpus.prepare import (
    Sample,
    classify_split,
    encode_split,
    read_parts,
    read_rejects,
    sample_for,
)
from job.corpus.vocab import build_vocab

pytestmark = pytest.mark.integration

COLS = ["source", "target"]


def corpus(tmp_path, n=300, extra=b""):
    rows = b"".join(b"source %d here,cible %d ici\n" % (i, i) for i in range(n))
    path = tmp_path / "c.csv"
    path.write_bytes(b"source,target\n" + rows + extra)
    return str(path)


def test_classify_then_encode_accounts_for_every_row(ray_cluster, tmp_path):
    long = b" ".join([b"w"] * 40)
    path = corpus(tmp_path, extra=b",empty\n" + long + b",x\n")
    run = str(tmp_path / "run")
    split = classify_split(path, "train", COLS, run, piece_bytes=500)
    assert split.counts == {"ok": 301, "empty_source": 1} and len(split.parts) > 10
    vocab = build_vocab(VocabConfig(type="word", vocab_size=1000), [read_parts(split.parts)
                        .select(COLS).to_pydict().values()])  # fmt: skip
    out = encode_split(split, vocab, max_length=16, run_dir=run, out_dir=f"{run}/prepared/train")
    assert out.counts == {"ok": 300, "empty_source": 1, "too_long": 1}
    assert sum(rows for _, rows in out.parts) == 300
    table = read_parts(out.parts)
    assert table.column_names == ["src_ids", "tgt_ids"]  # training reads ids only
    assert not (tmp_path / "run" / "staging" / "train").exists() or not list(
        (tmp_path / "run" / "staging" / "train").iterdir()
    )
    rejects = sorted(read_rejects(run, "train"), key=lambda r: r["reason"])
    assert [(r["reason"], r["line"]) for r in rejects] == [("empty_source", "302"),
                                                           ("too_long", "303")]  # fmt: skip


def test_valid_keeps_its_reference_text(ray_cluster, tmp_path):
    run = str(tmp_path / "run")
    split = classify_split(corpus(tmp_path, 20), "valid", COLS, run)
    vocab = build_vocab(VocabConfig(type="word"), [(["source"], ["cible"])])
    out = encode_split(split, vocab, 64, run, f"{run}/prepared/valid")
    table = read_parts(out.parts)
    assert table.column_names == ["src_ids", "tgt_ids", "target"]
    assert sorted(table.column("target").to_pylist())[:2] == ["cible 0 ici", "cible 1 ici"]


def test_the_vocabulary_sample_is_bounded_seeded_and_from_the_whole_corpus(ray_cluster, tmp_path):
    path = corpus(tmp_path, 3000)

    def draw(seed):
        sample = sample_for(max_sentences=1000, seed=seed)
        classify_split(path, "train", COLS, str(tmp_path / f"run{seed}"), sample=sample,
                       piece_bytes=2000)  # fmt: skip
        assert sample.size == 500 and 0 < sample.rate < 1
        src, tgt = [], []
        for s, t in sample.batches():
            src, tgt = src + s, tgt + t
        return src, tgt

    first = draw(1)
    assert len(first[0]) == 500 and first == draw(1) and first != draw(2)
    numbers = sorted(int(s.split()[1]) for s in first[0])
    assert numbers[0] < 300 and numbers[-1] > 2700  # drawn across every piece
    assert all(s.split()[1] == t.split()[1] for s, t in zip(*first))


def test_sample_keeps_the_smallest_keys_of_every_task(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sample = Sample(size=2, seed=0, rate=1.0)
    for name, rows in (("a", [[0.5, "a", "b"], [0.1, "c", "d"]]), ("b", [[0.3, "e", "f"]])):
        path = str(tmp_path / f"{name}.parquet")
        keys, src, tgt = zip(*rows)
        pq.write_table(pa.table({"key": keys, "source": src, "target": tgt}), path)
        sample.parts.append(path)
    assert sample.count() == 3 and sample.threshold() == 0.3
    assert list(sample.batches()) == [(["c"], ["d"]), (["e"], ["f"])]


def test_a_stray_quote_makes_its_file_read_again_whole(ray_cluster, tmp_path):
    """A quote inside an unquoted field is text to the CSV parser but flips the quote count, so
    the count takes the newline inside a later quoted field for a place to cut: the piece
    before it does not land, and the file is read again as one piece: the counts are exact."""
    rows = b"".join(b"s%d,t%d\n" % (i, i) for i in range(200))
    path = tmp_path / "c.csv"
    path.write_bytes(b"source,target\n" + rows + b'q"uote,in\n' + rows + b'"multi\nline",x\n')
    run = str(tmp_path / "run")
    whole = classify_split(str(path), "train", COLS, str(tmp_path / "w"))
    split = classify_split(str(path), "train", COLS, run, piece_bytes=64)
    assert split.counts == whole.counts == {"ok": 402}
    assert len(split.parts) == 1  # read again as one piece
    assert len(read_rejects(run, "train")) == split.read - split.used
