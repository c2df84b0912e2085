"""The corpus datasource (job.datasource) on a real local Ray cluster: accounting columns, and
two line-aligned text files (Moses style) read as one corpus."""

import bz2
import gzip

import pytest

from job.config import ParallelFiles
from job.corpus import open_corpus
from job.data import classify
from job.errors import DataError

pytestmark = pytest.mark.integration


def test_every_row_carries_its_file_line_and_row(ray_cluster, tmp_path):
    (tmp_path / "c.csv").write_bytes(b'source,target\na,b\n"two\nlines",c\nbad,row,here\n')
    rows = open_corpus(str(tmp_path / "c.csv"), ["source", "target"]).dataset().take_all()
    rows.sort(key=lambda r: r["_row"])
    assert [(r["_line"], r["_row"], r["_status"]) for r in rows] == [
        (2, 0, None), (3, 1, None), (5, 2, "wrong_field_count"),
    ]  # fmt: skip
    assert rows[1]["source"] == "two\nlines" and rows[2]["_raw"] == "bad,row,here"
    assert {r["_file"] for r in rows} == {str(tmp_path / "c.csv")}


def test_moses_style_pair_is_one_corpus_with_every_line_accounted_for(ray_cluster, tmp_path):
    (tmp_path / "corpus.en").write_bytes(b'\xef\xbb\xbf"Quoted," he said.\nSave\n\nbad\xff\nlast')
    with gzip.open(tmp_path / "corpus.fr.gz", "wb") as f:
        f.write("« Cité », dit-il.\nEnregistrer\nvide\nmauvais\ndernier\n".encode())
    pair = ParallelFiles(source=str(tmp_path / "corpus.en"), target=str(tmp_path / "corpus.fr.gz"))
    split = classify(pair, "train", "source", "target")
    assert split.counts == {"ok": 3, "empty_source": 1, "invalid_utf8": 1}
    rows = sorted(split.ds.take_all(), key=lambda r: r["line"])
    assert [(r["line"], r["source"], r["target"]) for r in rows if r["status"] == "ok"] == [
        (1, '"Quoted," he said.', "« Cité », dit-il."),
        (2, "Save", "Enregistrer"),
        (5, "last", "dernier"),
    ]
    assert rows[3]["raw"] == "bad\\xff\tmauvais"
    assert split.summary()["path"] == f"{pair.source} + {pair.target}"


def test_files_of_different_lengths_are_one_clear_error(ray_cluster, tmp_path):
    (tmp_path / "c.en").write_text("a\nb\nc\n")
    with bz2.open(tmp_path / "c.fr.bz2", "wt") as f:
        f.write("A\nB\n")
    pair = ParallelFiles(source=str(tmp_path / "c.en"), target=str(tmp_path / "c.fr.bz2"))
    with pytest.raises(DataError) as info:
        classify(pair, "train", "source", "target")
    from job.errors import user_error_of

    message = str(user_error_of(info.value))
    assert message == (
        f"{tmp_path / 'c.en'} has 3 lines but {tmp_path / 'c.fr.bz2'} has 2: "
        "the two files of a parallel corpus must be line-aligned"
    )


def test_a_missing_or_empty_side_is_named_before_any_task(tmp_path):
    (tmp_path / "c.en").write_text("a\n")
    (tmp_path / "empty.fr").write_bytes(b"")
    with pytest.raises(DataError, match=r"corpus not found: .*nope\.fr"):
        open_corpus(
            ParallelFiles(source=str(tmp_path / "c.en"), target=str(tmp_path / "nope.fr")),
            ["s", "t"],
        )
    with pytest.raises(DataError, match=r"empty\.fr: the file is empty"):
        open_corpus(
            ParallelFiles(source=str(tmp_path / "c.en"), target=str(tmp_path / "empty.fr")),
            ["s", "t"],
        )
    one = open_corpus(
        ParallelFiles(source=str(tmp_path / "c.en"), target=str(tmp_path / "c.en")), ["s"]
    )
    assert one.fmt == "text" and one.count_rows() == 1  # translating reads the source side only
