"""Finding and checking a corpus on the driver (job.corpus.files), no Ray needed."""

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job.corpus.files import detect_format, list_files, open_corpus
from job.errors import DataError


def test_list_files_of_a_directory_skips_hidden_and_underscore_names(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.csv", "a.csv", "sub/c.csv", ".hidden.csv", "_SUCCESS", "sub/_tmp.csv"):
        (tmp_path / name).write_text("source,target\na,b\n")
    assert list_files(str(tmp_path)) == [str(tmp_path / n) for n in ("a.csv", "b.csv", "sub/c.csv")]
    assert list_files(str(tmp_path / "*.csv")) == [str(tmp_path / n) for n in ("a.csv", "b.csv")]
    assert list_files(tmp_path.as_uri() + "/a.csv") == [tmp_path.as_uri() + "/a.csv"]


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(DataError, match=r"corpus not found: .*nope\.csv"):
        list_files(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match=r"no files under .*\*\.tsv"):
        list_files(str(tmp_path / "*.tsv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files under"):
        list_files(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("names", "fmt"),
    [
        (["a.csv", "b.csv.gz"], "csv"),
        (["a.tsv", "b.tsv.gz"], "tsv"),
        (["a.txt"], "text"),
        (["a.parquet", "b.pq"], "parquet"),
        (["a.csv", "b.tsv"], "csv"),
    ],
)
def test_format_from_file_names(names, fmt):
    assert detect_format("corpus", names) == fmt


def test_mixed_or_unknown_formats_are_refused():
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format("corpus", ["a.csv", "b.parquet"])
    with pytest.raises(DataError, match=r"use \.csv, \.tsv, \.txt or \.parquet"):
        detect_format("corpus", ["a.json"])


def test_missing_column_names_the_file_and_its_columns(tmp_path):
    (tmp_path / "c.csv").write_text("en,fr\na,b\n")
    with pytest.raises(DataError) as exc:
        open_corpus(str(tmp_path / "c.csv"), ["source", "target"])
    assert "c.csv" in str(exc.value) and "['source', 'target']" in str(exc.value)
    assert "['en', 'fr']" in str(exc.value)


def test_empty_file_and_plain_text_with_two_columns_are_refused(tmp_path):
    (tmp_path / "z.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"z\.csv: the file is empty"):
        open_corpus(str(tmp_path / "z.csv"), ["source"])
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(DataError, match="plain-text file has one column"):
        open_corpus(str(tmp_path / "t.txt"), ["source", "target"])


def test_optional_columns_only_when_every_file_has_them(tmp_path):
    (tmp_path / "a.csv").write_text("id,source\n1,x\n")
    (tmp_path / "b.csv").write_text("source\ny\n")
    assert open_corpus(str(tmp_path), ["source"], optional_columns=("id",)).optional == ()
    assert open_corpus(str(tmp_path / "a.csv"), ["source"], optional_columns=("id",)).optional == (
        "id",
    )


def test_plain_text_column_name(tmp_path):
    (tmp_path / "t.txt").write_text("a\nb\n")
    corpus = open_corpus(str(tmp_path / "t.txt"), ["source"], plain_text_column="en")
    assert (corpus.fmt, corpus.columns) == ("text", ["en"])


def test_count_rows_for_the_progress_bar(tmp_path):
    (tmp_path / "in.csv").write_text("source\na\nb\nc", encoding="utf-8")  # no final newline
    assert open_corpus(str(tmp_path / "in.csv"), ["source"]).count_rows() == 3
    (tmp_path / "in.txt").write_text("a\nb\n", encoding="utf-8")
    assert open_corpus(str(tmp_path / "in.txt"), ["source"]).count_rows() == 2
    pq.write_table(pa.table({"source": ["a"] * 5}), tmp_path / "in.parquet")
    assert open_corpus(str(tmp_path / "in.parquet"), ["source"]).count_rows() == 5
    with gzip.open(tmp_path / "in.csv.gz", "wt") as f:
        f.write("source\na\n")
    assert open_corpus(str(tmp_path / "in.csv.gz"), ["source"]).count_rows() is None  # unknown
