"""Resumable output parts (job.inference.outputs), no Ray needed."""

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from job.errors import DataError
from job.inference.outputs import (
    DONE_FILE,
    JOB_FILE,
    PartWriter,
    assemble,
    list_parts,
    mark_done,
    part_key,
    read_parts,
    start_parts,
)

JOB = {"input": "in.csv", "beam": 4}
SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


def rows(ids):
    return pa.table({"id": pa.array(ids, pa.int64()), "text": pa.array([f"t{i}" for i in ids])})


def test_part_keys_group_consecutive_rows_of_one_file():
    assert part_key(0, 0, 10) == part_key(0, 9, 10) == "00000-000000"
    assert part_key(0, 10, 10) == "00000-000001"
    assert part_key(3, 25, 10) == "00003-000002"


def test_writer_writes_each_part_once_complete_and_drops_done_ones(tmp_path):
    d = str(tmp_path / "out")
    done = start_parts(d, JOB)
    assert done == set() and json.loads((tmp_path / "out" / JOB_FILE).read_text()) == JOB
    writer = PartWriter(d, "parquet", done={"00000-000001"})
    keys = ["00000-000000"] * 3 + ["00000-000001"] * 2 + ["00000-000002"]
    writer.add(keys[:4], rows([0, 1, 2, 3]))  # a part may span calls
    writer.add(keys[4:], rows([4, 5]))
    writer.close()
    assert writer.written == 2
    assert list_parts(d) == ["part-00000-000000.parquet", "part-00000-000002.parquet"]
    got = [t.column("id").to_pylist() for t in read_parts(d, list_parts(d), "parquet")]
    assert got == [[0, 1, 2], [5]]


def test_rows_of_a_finished_part_arriving_later_are_a_bug_not_a_silent_loss(tmp_path):
    writer = PartWriter(str(tmp_path), "parquet", set())
    writer.add(["00000-000000", "00000-000001"], rows([0, 1]))
    with pytest.raises(RuntimeError, match="out of order"):
        writer.add(["00000-000000"], rows([2]))


def test_restart_keeps_finished_parts_and_removes_leftovers(tmp_path):
    d = tmp_path / "out"
    start_parts(str(d), JOB)
    writer = PartWriter(str(d), "csv", set())
    writer.add(["00000-000000"], rows([0]))
    writer.close()
    mark_done(str(d), {"rows": 1})
    (d / "part-00000-000001.csv.tmp-1234abcd").write_text("half")
    assert start_parts(str(d), JOB) == {"00000-000000"}
    assert sorted(p.name for p in d.iterdir()) == [JOB_FILE, "part-00000-000000.csv"]
    assert DONE_FILE not in {p.name for p in d.iterdir()}


def test_another_jobs_or_foreign_directory_is_refused(tmp_path):
    d = tmp_path / "out"
    start_parts(str(d), JOB)
    with pytest.raises(DataError, match=r"different translation job \(beam differ\)"):
        start_parts(str(d), {**JOB, "beam": 1})
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="is not a translation output"):
        start_parts(str(foreign), JOB)
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_assemble_concatenates_in_order_and_removes_the_parts(tmp_path, fmt):
    d = tmp_path / "out.parts"
    start_parts(str(d), JOB)
    writer = PartWriter(str(d), fmt, set())
    writer.add(["00000-000000", "00000-000000", "00001-000000"], rows([0, 1, 2]))
    writer.close()
    out = tmp_path / f"out.{fmt}"
    assemble(str(d), list_parts(str(d)), fmt, str(out), SCHEMA)
    table = pacsv.read_csv(out) if fmt == "csv" else pq.read_table(out)
    assert table.column("id").to_pylist() == [0, 1, 2] and not d.exists()


def test_assemble_with_no_rows_still_writes_a_valid_file(tmp_path):
    d = tmp_path / "out.parts"
    start_parts(str(d), JOB)
    assemble(str(d), [], "parquet", str(tmp_path / "out.parquet"), SCHEMA)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 0 and table.schema.names == ["id", "text"]
