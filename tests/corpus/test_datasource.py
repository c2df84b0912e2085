"""The corpus datasource (job.corpus.datasource) on a real local Ray cluster: accounting columns,
and two line-aligned text files (Moses style) read as one corpus."""

import pytest

from job.config import ParallelFiles
from job.corpus.files import open_corpus
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
