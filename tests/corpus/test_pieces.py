"""A corpus cut into pieces (job.corpus.pieces) reads exactly what one sequential pass reads: the
same rows with the same lines and statuses, whatever the cut, for CSV (quoted newlines, stray
quotes), TSV, plain text, line-aligned pairs and Parquet row groups. Scans run as Ray tasks on
the local cluster."""

import bz2
import gzip
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job.config import ParallelFiles
from job.corpus.datasource import LINE, STATUS
from job.corpus.files import open_corpus
from job.corpus.pieces import PieceRead, plan, read_piece
from job.corpus.prepare import classify_split, read_parts
from job.errors import DataError

pytestmark = pytest.mark.integration

MESSY = [
    b"hello world,bonjour le monde\n", b'"a, quoted",cite\n', b'"multi\nline ""q""\nfield",x\n',
    b"plain,text\n", b"\n", b'"never closed,x,y\n', b"bad\xff,byte\n", b",empty\n",
    b"source,target\n", b"one,two,three\n", b'"x"y,z\n', b'a,"b\n', b'c",d\n', b'"\n',
    b'q"uote,in\n', b"caf\xc3\xa9,\xe2\x82\xac\r\n",
]  # fmt: skip


def rows_of(corpus, piece_bytes):
    """(line, status, source) of every row read piece by piece; a file whose pieces did not all
    land is read again whole, as job.corpus.prepare does."""
    out, landed = [], {}
    pieces = plan(corpus, piece_bytes)
    for piece in pieces:
        result = PieceRead()
        for t in read_piece(piece, corpus.columns, corpus.columns, result, 7):
            out += [(piece.file, *r) for r in zip(*(t.column(c).to_pylist() for c in
                    (LINE, STATUS, corpus.columns[0])))]  # fmt: skip
        landed[piece.file] = landed.get(piece.file, True) and result.landed
    for file, ok in landed.items():
        if not ok:
            out = [r for r in out if r[0] != file]
            whole = next(p for p in pieces if p.file == file).whole()
            for t in read_piece(whole, corpus.columns, corpus.columns, PieceRead()):
                out += [(file, *r) for r in zip(*(t.column(c).to_pylist() for c in
                        (LINE, STATUS, corpus.columns[0])))]  # fmt: skip
    return sorted(out, key=str), len(pieces)


def reference(corpus):
    rows = []
    for t in corpus.dataset().iter_batches(batch_format="pyarrow", batch_size=None):
        cols = ("_file", LINE, STATUS, corpus.columns[0])
        rows += list(zip(*(t.column(c).to_pylist() for c in cols)))
    return sorted(rows, key=str)


@pytest.mark.parametrize("seed", range(4))
def test_messy_csv_in_pieces_reads_like_one_pass(ray_cluster, tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "m.csv"
    path.write_bytes(b"source,target\n" + b"".join(rng.choice(MESSY) for _ in range(300)))
    corpus = open_corpus(str(path), ["source", "target"])
    expected = reference(corpus)
    for piece_bytes in (23, 200, 1000):
        got, pieces = rows_of(corpus, piece_bytes)
        assert pieces > 1 and got == expected, piece_bytes


def test_well_formed_csv_pieces_land_without_a_second_read(ray_cluster, tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"source,target\n" + b'"two\nlines, ""q""",x\nplain,y\n' * 200)
    corpus = open_corpus(str(path), ["source", "target"])
    size = path.stat().st_size
    # a last span that starts inside the last line: the piece before it reads to the end
    for piece_bytes in (64, size - 1, size - 3):
        for piece in plan(corpus, piece_bytes):
            result = PieceRead()
            list(read_piece(piece, corpus.columns, corpus.columns, result))
            assert result.landed, (piece_bytes, piece.name)


@pytest.mark.parametrize("name", ["c.tsv", "c.txt"])
def test_tsv_and_text_in_pieces(ray_cluster, tmp_path, name):
    lines = [b'"quoted start\tx\n', b"\n", b"bad\xff\tz\n", b"a\tb\tc\n", b"ok\tfine\n"]
    rng = random.Random(1)
    head = b"source\ttarget\n" if name.endswith("tsv") else b""
    (tmp_path / name).write_bytes(head + b"".join(rng.choice(lines) for _ in range(300)) + b"x")
    cols = ["source", "target"] if name.endswith("tsv") else ["source"]
    corpus = open_corpus(str(tmp_path / name), cols)
    got, pieces = rows_of(corpus, 50)
    assert pieces > 10 and got == reference(corpus)


def test_parquet_row_groups_are_pieces(ray_cluster, tmp_path):
    table = pa.table({"source": [f"s{i}" for i in range(100)], "target": ["t"] * 100})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=30)
    corpus = open_corpus(str(tmp_path / "c.parquet"), ["source", "target"])
    got, pieces = rows_of(corpus, 1)
    assert pieces == 4 and got == reference(corpus)


def test_line_aligned_pairs_in_pieces(ray_cluster, tmp_path):
    src = b"".join(b"source %d\n" % i for i in range(500)) + b"\nbad\xff\nlast"
    tgt = b"".join(b"cible %d\n" % i for i in range(500)) + b"vide\nmauvais\nderniere\n"
    (tmp_path / "c.en").write_bytes(src)
    (tmp_path / "c.fr").write_bytes(tgt)
    pair = ParallelFiles(source=str(tmp_path / "c.en"), target=str(tmp_path / "c.fr"))
    split = classify_split(pair, "train", ["source", "target"], str(tmp_path / "run"),
                           piece_bytes=300)  # fmt: skip
    assert split.counts == {"ok": 501, "empty_source": 1, "invalid_utf8": 1}
    rows = sorted(read_parts(split.parts).to_pylist(), key=lambda r: r["line"])
    assert [(r["line"], r["source"], r["target"]) for r in rows][::250] == [
        (1, "source 0", "cible 0"), (251, "source 250", "cible 250"), (503, "last", "derniere"),
    ]  # fmt: skip


def test_moses_style_pair_is_one_corpus_with_every_line_accounted_for(ray_cluster, tmp_path):
    (tmp_path / "corpus.en").write_bytes(b'\xef\xbb\xbf"Quoted," he said.\nSave\n\nbad\xff\nlast')
    with gzip.open(tmp_path / "corpus.fr.gz", "wb") as f:
        f.write("« Cité », dit-il.\nEnregistrer\nvide\nmauvais\ndernier\n".encode())
    pair = ParallelFiles(source=str(tmp_path / "corpus.en"), target=str(tmp_path / "corpus.fr.gz"))
    split = classify_split(pair, "train", ["source", "target"], str(tmp_path / "run"))
    assert split.counts == {"ok": 3, "empty_source": 1, "invalid_utf8": 1}
    rows = sorted(read_parts(split.parts).to_pylist(), key=lambda r: r["line"])
    assert [(r["line"], r["source"], r["target"]) for r in rows] == [
        (1, '"Quoted," he said.', "« Cité », dit-il."),
        (2, "Save", "Enregistrer"),
        (5, "last", "dernier"),
    ]
    assert split.summary()["path"] == f"{pair.source} + {pair.target}"


@pytest.mark.parametrize("compressed", [True, False])
def test_files_of_different_lengths_are_one_clear_error(ray_cluster, tmp_path, compressed):
    """Compressed: found by the reading task; uncompressed and in pieces: by the scan, on the
    driver, before any row is read. The same one line either way."""
    (tmp_path / "c.en").write_text("a\nb\nc\n" * 50)
    target = tmp_path / ("c.fr.bz2" if compressed else "c.fr")
    with bz2.open(target, "wt") if compressed else open(target, "w") as f:
        f.write("A\nB\n" * 50)
    pair = ParallelFiles(source=str(tmp_path / "c.en"), target=str(target))
    with pytest.raises(DataError) as info:
        classify_split(pair, "train", ["source", "target"], str(tmp_path / "run"), piece_bytes=64)
    from job.errors import user_error_of

    assert str(user_error_of(info.value)) == (
        f"{tmp_path / 'c.en'} has 150 lines but {target} has 100: "
        "the two files of a parallel corpus must be line-aligned"
    )
