"""The Ray Data datasource that reads a corpus's files with job.corpus.parsers's tolerant parsers:
every row read becomes one output row with the requested columns as strings ("42" and "true" stay
text) plus the row-accounting columns: `_status` (null, or why the row could not be parsed), `_raw`
(the line as read, for rejected rows), `_file` (the path as given), `_line` (the record's first
physical line, 1-based, the header being line 1; for Parquet the 1-based row) and `_row` (0-based
ordinal of the row in its file, every row counted, which bulk jobs use to cut their output into
resumable parts).

Formats: CSV, TSV, plain text (one sentence per line), Parquet (row group by row group, columns
cast to string), and "parallel": two line-aligned plain-text files (Moses style), read together
by one task per pair.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from ray.data.datasource.file_based_datasource import FileBasedDatasource

from job import storage
from job.corpus.parsers import (
    ReaderError,
    dialect,
    lines_of,
    parse_parallel_lines,
    parse_records,
    parse_text_lines,
)

STATUS, RAW, FILE, LINE, ROW = "_status", "_raw", "_file", "_line", "_row"
META_COLUMNS = (STATUS, RAW, FILE, LINE, ROW)
ROWS_PER_BLOCK = 50_000


class CorpusDatasource(FileBasedDatasource):
    """Ray Data datasource over CSV/TSV/text/Parquet files: the requested columns as strings plus
    the row-accounting columns `_status`, `_raw`, `_file`, `_line`, `_row` (module docstring).
    One read task per file, streamed in blocks of at most `rows_per_block` rows (small blocks
    spread the work of a single large file over an actor pool)."""

    def __init__(
        self,
        paths: list[str],
        *,
        fmt: str,
        columns: list[str],
        optional_columns: tuple[str, ...] = (),
        rows_per_block: int = ROWS_PER_BLOCK,
        targets: dict[str, str] | None = None,
        **kwargs,
    ):
        super().__init__(paths, **kwargs)
        self.fmt, self.columns, self.optional = fmt, list(columns), tuple(optional_columns)
        self.rows_per_block = rows_per_block
        self.targets = targets or {}  # parallel: each source file's line-aligned target file
        # Ray hands _read_stream the filesystem's path (no scheme); rows name the file as given.
        self.names = {_strip_scheme(p): p for p in paths}

    def output_columns(self) -> list[str]:
        return self.columns + [c for c in self.optional if c not in self.columns]

    def _open_input_source(self, filesystem, path: str, **open_args):
        if self.fmt == "parquet":  # random access for the footer and row groups
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        name = self.names.get(_strip_scheme(path), path)
        if self.fmt == "parquet":
            yield from self._read_parquet(f, name)
            return
        wanted = self.output_columns()
        if self.fmt == "text":
            records = parse_text_lines(lines_of(f))
            index = {self.columns[0]: 0}
        elif self.fmt == "parallel":
            target = self.targets[name]
            fs, p = storage.fs_and_path(target)
            with fs.open_input_stream(p, compression="detect") as t:
                records = parse_parallel_lines(lines_of(f), lines_of(t), name, target)
                yield from self._blocks(
                    records, wanted, name, {c: i for i, c in enumerate(self.columns)}
                )
            return
        else:
            records = parse_records(lines_of(f), path=name, **dialect(self.fmt))
            index = None
        yield from self._blocks(records, wanted, name, index)

    def _blocks(
        self, records, wanted: list[str], name: str, index: dict | None
    ) -> Iterator[pa.Table]:
        return record_blocks(records, self.columns, wanted, name, index, self.rows_per_block)

    def _read_parquet(self, f, name: str) -> Iterator[pa.Table]:
        yield from parquet_blocks(f, name, self.columns, self.output_columns(), self.rows_per_block)


def parquet_blocks(
    f, name: str, columns: list[str], wanted: list[str], rows_per_block: int, row_group=None
) -> Iterator[pa.Table]:
    """Blocks of a Parquet file (or of one of its row groups): text columns cast to string,
    optional ones as they are, and the row-accounting columns (`_line` = 1-based row)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f)
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise ReaderError(
            f"{name}: column(s) {missing} not found; the file has columns {pf.schema_arrow.names}"
        )
    have = [c for c in wanted if c in pf.schema_arrow.names]
    groups = None if row_group is None else [row_group]
    start = sum(pf.metadata.row_group(g).num_rows for g in range(row_group or 0))
    for batch in pf.iter_batches(batch_size=rows_per_block, columns=have, row_groups=groups):
        n = batch.num_rows
        # Text columns become strings; optional ones (an id) keep their type.
        arrays = [
            (batch.column(c).cast(pa.string()) if c in columns else batch.column(c))
            if c in have
            else pa.nulls(n, pa.string())
            for c in wanted
        ]
        rows = pa.array(range(start, start + n), pa.int64())
        arrays += [
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            pa.array([name] * n, pa.string()),
            pc.add(rows, 1),
            rows,
        ]
        yield pa.table(arrays, names=wanted + list(META_COLUMNS))
        start += n


def record_blocks(
    records,
    columns: list[str],
    wanted: list[str],
    name: str,
    index: dict | None,
    rows_per_block: int,
    start_row: int | None = 0,
) -> Iterator[pa.Table]:
    """Blocks of at most rows_per_block rows from parsed records (the header, if any, sets the
    column positions). `_row` counts rows from start_row; None: unknown (a piece of a CSV file
    that does not start at its beginning), left null."""
    rows = _Block(wanted, name, start_row)
    for line, fields, reason, raw in records:
        if reason == "header":
            index = {col: i for i, col in enumerate(fields)}
            missing = [c for c in columns if c not in index]
            if missing:
                raise ReaderError(
                    f"{name}: column(s) {missing} not found; the file has columns {fields}"
                )
            continue
        if fields is None:
            rows.add(line, None, reason, raw)
        else:
            rows.add(line, [fields[index[c]] if c in index else None for c in wanted], None, None)
        if len(rows) >= rows_per_block:
            yield rows.build()
            rows = _Block(wanted, name, rows.end)
    if len(rows):
        yield rows.build()


def _strip_scheme(path: str) -> str:
    return path.split("://", 1)[1] if storage.is_uri(path) else os.path.abspath(path)


class _Block:
    def __init__(self, columns: list[str], path: str, start_row: int | None):
        self.columns, self.path, self.start = columns, path, start_row
        self.values: list[list] = [[] for _ in columns]
        self.status, self.raw, self.line = [], [], []

    def __len__(self) -> int:
        return len(self.line)

    @property
    def end(self) -> int | None:
        return None if self.start is None else self.start + len(self.line)

    def add(self, line: int, values, reason, raw) -> None:
        for col, v in zip(self.values, values or [None] * len(self.columns)):
            col.append(v)
        self.status.append(reason)
        self.raw.append(raw)
        self.line.append(line)

    def build(self) -> pa.Table:
        n = len(self.line)
        arrays = [pa.array(v, pa.string()) for v in self.values]
        arrays += [
            pa.array(self.status, pa.string()),
            pa.array(self.raw, pa.string()),
            pa.array([self.path] * n, pa.string()),
            pa.array(self.line, pa.int64()),
            pa.nulls(n, pa.int64())
            if self.start is None
            else pa.array(range(self.start, self.end), pa.int64()),
        ]
        return pa.table(arrays, names=self.columns + list(META_COLUMNS))
