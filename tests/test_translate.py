"""Bulk-translation helpers that need no Ray: the row count and the progress line."""


def test_progress_bar_and_row_count(tmp_path):
    from job.data import open_corpus
    from job.translate import count_rows, progress_line

    f = tmp_path / "in.csv"
    f.write_text("source\na\nb\nc", encoding="utf-8")  # no final newline
    assert count_rows(open_corpus(str(f), ["source"])) == 3
    t = tmp_path / "in.txt"
    t.write_text("a\nb\n", encoding="utf-8")
    assert count_rows(open_corpus(str(t), ["source"])) == 2
    line = progress_line(50, 200, 5.0)
    assert "25%" in line and "50/200 rows" in line and "eta 15s" in line
    assert "rows/s" in progress_line(7, None, 1.0)
