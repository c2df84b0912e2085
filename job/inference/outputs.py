"""The output of a bulk job as resumable parts: each part holds up to `part_rows` consecutive
rows of one input file, lands atomically (written aside, then renamed), and is named by its
key `FFFFF-CCCCCC` (input file number, chunk number): part-FFFFF-CCCCCC.parquet (or .csv).

The directory also holds `_job.json` (what the job was: a re-run must match it to resume) and,
once every part is there, `_SUCCESS.json`.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from job import storage
from job.errors import DataError

PART_ROWS = 20_000
JOB_FILE, DONE_FILE = "_job.json", "_SUCCESS.json"
_PART_NAME = re.compile(r"^part-(\d{5}-\d{6})\.(parquet|csv)$")
_STRING_COLUMNS = ("source", "translation", "status", "reference")


def part_key(file_number: int, row: int, part_rows: int) -> str:
    """The key of the part that row `row` (0-based, in its file) of input file `file_number`
    goes to."""
    return f"{file_number:05d}-{row // part_rows:06d}"


def start_parts(parts_dir: str, job: dict) -> set[str]:
    """Keys of the parts an earlier run of the same job wrote; refuses a directory holding
    something else or another job's parts; removes leftovers of interrupted writes."""
    names = storage.list_dir(parts_dir)
    job_path = storage.join(parts_dir, JOB_FILE)
    if names:
        if JOB_FILE not in names:
            raise DataError(
                f"output {parts_dir} exists and is not a translation output of this command; "
                f"choose another --output"
            )
        old = json.loads(storage.read_text(job_path))
        changed = [k for k in job if old.get(k) != job[k]]
        if changed:
            raise DataError(
                f"output {parts_dir} holds parts of a different translation job "
                f"({', '.join(changed)} differ); use another --output or delete it"
            )
    storage.makedirs(parts_dir)
    for name in names:
        if ".tmp-" in name or name == DONE_FILE:
            storage.delete(storage.join(parts_dir, name))
    storage.write_text(job_path, json.dumps(job, indent=1))
    return {m.group(1) for m in map(_PART_NAME.match, names) if m}


def list_parts(parts_dir: str) -> list[str]:
    """File names of the finished parts, in input order."""
    return sorted(name for name in storage.list_dir(parts_dir) if _PART_NAME.match(name))


def mark_done(parts_dir: str, summary: dict) -> None:
    storage.write_text(storage.join(parts_dir, DONE_FILE), json.dumps(summary))


class PartWriter:
    """Buffers consecutive rows of one part and writes each part when the next one starts (rows
    arrive in input order, so a part is complete then). Parts in `done` are dropped."""

    def __init__(self, parts_dir: str, fmt: str, done: set[str]):
        self.dir, self.fmt, self.done = parts_dir, fmt, done
        self.key, self.tables, self.flushed, self.written = None, [], set(), 0

    def add(self, keys: list[str], table: pa.Table) -> None:
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                self._take(keys[start], table.slice(start, i - start))
                start = i

    def _take(self, key: str, table: pa.Table) -> None:
        if key != self.key:
            self._flush()
            if key in self.flushed:
                raise RuntimeError(f"rows of output part {key} arrived out of order")
            self.key = key
        if key not in self.done:
            self.tables.append(table)

    def _flush(self) -> None:
        if self.key is not None and self.tables:
            table = pa.concat_tables(self.tables)
            with storage.open_output(storage.join(self.dir, f"part-{self.key}.{self.fmt}")) as sink:
                if self.fmt == "csv":
                    pacsv.write_csv(table, sink)
                else:
                    pq.write_table(table, sink)
            self.written += 1
        if self.key is not None:
            self.flushed.add(self.key)
        self.tables = []

    def close(self) -> None:
        self._flush()
        self.key = None


def read_parts(parts_dir: str, parts: list[str], fmt: str, columns: list[str] | None = None):
    """The parts' tables, one at a time (text columns stay strings in CSV parts)."""
    for name in parts:
        fs, p = storage.fs_and_path(storage.join(parts_dir, name))
        if fmt == "csv":
            options = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in _STRING_COLUMNS}, include_columns=columns
            )
            with fs.open_input_stream(p) as f:
                table = pacsv.read_csv(f, convert_options=options)
        else:
            with fs.open_input_file(p) as f:
                table = pq.read_table(f, columns=columns)
        yield table


def assemble(
    parts_dir: str, parts: list[str], fmt: str, output: str, empty_schema: pa.Schema
) -> None:
    """Concatenate the parts into the single output file (written aside, renamed), then remove
    them. With no rows, the file is still valid, with `empty_schema`."""
    with storage.open_output(output) as sink:
        writer = None
        for table in read_parts(parts_dir, parts, fmt):
            writer = writer or _writer(sink, table.schema, fmt)
            writer.write_table(table)
        writer = writer or _writer(sink, empty_schema, fmt)
        writer.close()
    storage.delete_dir(parts_dir)


def _writer(sink, schema: pa.Schema, fmt: str):
    return pacsv.CSVWriter(sink, schema) if fmt == "csv" else pq.ParquetWriter(sink, schema)
