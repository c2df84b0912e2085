"""A CSV/TSV/plain-text reader for corpora nobody cleaned: every physical line is accounted for.

pyarrow's CSV reader is all-or-nothing: one bad row (a stray quote, a wrong field count, a byte
that is not UTF-8) fails the whole file. This reader parses with Python's csv module, one record
at a time, inside Ray Data read tasks (one per file, streamed in chunks, any pyarrow filesystem,
.gz/.bz2 by extension), and turns every record into one output row:

- a usable record gives the requested columns as strings ("42", "true" stay text);
- a record that cannot be used gives a row whose `_status` is the reason, with its raw text in
  `_raw` (undecodable bytes shown as \\xNN) - never a missing row.

Reasons: blank_line, wrong_field_count, unterminated_quote, malformed_csv (csv module error: a
quote inside an unquoted field, a NUL byte, ...), invalid_utf8, duplicate_header (a repeated
header line, e.g. from concatenated files). A UTF-8 byte-order mark and CRLF line ends are
accepted silently. Every row carries `_file` (the path as given), `_line` (the record's first
physical line, 1-based, the header being line 1; for Parquet the 1-based row) so a rejected row
can be found in its file, and `_row` (0-based ordinal of the row in its file, every row
counted), which bulk translation uses to cut the output into resumable parts.

Parquet files go through the same datasource (row group by row group) so that every format
yields the same columns: the requested ones cast to string, plus the accounting columns.

TSV is split on tabs only, with no quote processing (quotes are text: news lines often start
with one), so each physical line is one record and unterminated_quote never applies. CSV keeps
RFC 4180 quoting: quoted fields may hold commas, doubled quotes and newlines.

Recovery from a stray quote (CSV): the csv module would read on to the next quote character (or
to the end of the file) as one field. When a record that spans several physical lines fails to
parse or has the wrong number of fields, only its first line is rejected (unterminated_quote)
and parsing restarts on the next line, so the rows after it survive.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from collections import deque
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from ray.data.datasource.file_based_datasource import FileBasedDatasource

from job import storage
from job.errors import DataError

STATUS, RAW, FILE, LINE, ROW = "_status", "_raw", "_file", "_line", "_row"
META_COLUMNS = (STATUS, RAW, FILE, LINE, ROW)
_BAD_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that did not decode, kept by surrogateescape
_BOM = "\ufeff"
ROWS_PER_BLOCK = 50_000


class ReaderError(DataError):
    """A file that cannot be read at all (no header, missing columns)."""


def lines_of(stream, chunk_bytes: int = 1 << 20) -> Iterator[str]:
    """Decode a binary stream into lines split on "\\n" only (ends kept; CR stays for csv to see).

    Undecodable bytes become lone surrogates (surrogateescape) so they can be detected per line
    instead of failing the file."""
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    tail = ""
    while True:
        chunk = stream.read(chunk_bytes)
        text = tail + decoder.decode(chunk or b"", final=not chunk)
        parts = text.split("\n")
        tail = parts.pop()
        for part in parts:
            yield part + "\n"
        if not chunk:
            if tail:
                yield tail
            return


class _RecordTooLong(Exception):
    pass


class _PushbackLines:
    """Line iterator for csv.reader that remembers the lines of the current record and can
    take lines back (to re-parse them after a stray quote swallowed them)."""

    def __init__(self, lines: Iterator[str], max_record_lines: int):
        self.lines, self.pending, self.taken = lines, deque(), []
        self.next_line = 1  # physical line number of the next line handed out
        self.max_record_lines = max_record_lines

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if len(self.taken) >= self.max_record_lines:
            # an open quote ran on: stop reading the rest of the file into one field
            raise _RecordTooLong
        line = self.pending.popleft() if self.pending else next(self.lines)
        self.taken.append(line)
        self.next_line += 1
        return line

    def start_record(self) -> int:
        self.taken = []
        return self.next_line

    def give_back(self, lines: list[str]) -> None:
        self.pending.extendleft(reversed(lines))
        self.next_line -= len(lines)


def _show(text: str) -> str:
    """Raw text as valid UTF-8 for the rejects file: undecodable bytes become \\xNN."""
    return (
        text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").rstrip("\r\n")
    )


def dialect(fmt: str) -> dict:
    """csv.reader options of a delimited format: CSV with quotes, TSV split on tabs only."""
    if fmt == "tsv":
        return {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    return {"delimiter": ",", "quoting": csv.QUOTE_MINIMAL}


def parse_records(
    lines: Iterator[str],
    delimiter: str,
    path: str = "",
    max_record_lines: int = 1000,
    quoting: int = csv.QUOTE_MINIMAL,
) -> Iterator[tuple[int, list[str] | None, str | None, str | None]]:
    """(line, fields, reason, raw) per record of a delimited file; the first record is the header
    (yielded with reason "header"). fields is None when reason is set. A quoted field may span
    at most max_record_lines lines. quoting=csv.QUOTE_NONE: quotes are plain text."""
    src = _PushbackLines(lines, max_record_lines)
    reader = csv.reader(src, delimiter=delimiter, quoting=quoting, strict=True)
    header: list[str] | None = None
    while True:
        line = src.start_record()
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            fields, error = None, str(exc)
        except _RecordTooLong:
            fields, error = None, "unexpected end of data"
        taken = src.taken
        if line == 1 and taken and taken[0].startswith(_BOM):
            taken[0] = taken[0][1:]
            if fields:
                fields[0] = fields[0].lstrip(_BOM)
        raw = "".join(taken)
        if len(taken) > 1 and (
            error is not None or (header is not None and len(fields) != len(header))
        ):
            # A quote opened on this line ran on into the next ones: reject this line only.
            src.give_back(taken[1:])
            yield line, None, "unterminated_quote", _show(taken[0])
            continue
        if error is not None:
            reason = "unterminated_quote" if "unexpected end of data" in error else "malformed_csv"
            yield line, None, reason, _show(raw)
            continue
        if header is None:
            if not fields or not any(f.strip() for f in fields):
                yield line, None, "blank_line", _show(raw)
                continue
            header = [f.strip() for f in fields]
            if _BAD_UTF8.search(raw):
                raise ReaderError(
                    f"{path}: line {line}: the header is not valid UTF-8: {_show(raw)!r}"
                )
            yield line, header, "header", None
            continue
        if not fields:
            yield line, None, "blank_line", _show(raw)
        elif _BAD_UTF8.search(raw):
            yield line, None, "invalid_utf8", _show(raw)
        elif len(fields) != len(header):
            yield line, None, "wrong_field_count", _show(raw)
        elif [f.strip() for f in fields] == header:
            yield line, None, "duplicate_header", _show(raw)
        else:
            yield line, fields, None, None


def parse_text_lines(
    lines: Iterator[str],
) -> Iterator[tuple[int, list[str] | None, str | None, str | None]]:
    """(line, [text], reason, raw) per line of a plain-text file (one sentence per line)."""
    for number, text in enumerate(lines, start=1):
        if number == 1 and text.startswith(_BOM):
            text = text[1:]
        text = text.rstrip("\n").rstrip("\r")
        if _BAD_UTF8.search(text):
            yield number, None, "invalid_utf8", _show(text)
        else:
            yield number, [text], None, None


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
        **kwargs,
    ):
        super().__init__(paths, **kwargs)
        self.fmt, self.columns, self.optional = fmt, list(columns), tuple(optional_columns)
        self.rows_per_block = rows_per_block
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
        else:
            records = parse_records(lines_of(f), path=name, **dialect(self.fmt))
            index = None
        rows = _Block(wanted, name, 0)
        for line, fields, reason, raw in records:
            if reason == "header":
                index = {col: i for i, col in enumerate(fields)}
                missing = [c for c in self.columns if c not in index]
                if missing:
                    raise ReaderError(
                        f"{name}: column(s) {missing} not found; the file has columns {fields}"
                    )
                continue
            if fields is None:
                rows.add(line, None, reason, raw)
            else:
                rows.add(
                    line, [fields[index[c]] if c in index else None for c in wanted], None, None
                )
            if len(rows) >= self.rows_per_block:
                yield rows.build()
                rows = _Block(wanted, name, rows.end)
        if len(rows):
            yield rows.build()

    def _read_parquet(self, f, name: str) -> Iterator[pa.Table]:
        import pyarrow.parquet as pq

        wanted = self.output_columns()
        pf = pq.ParquetFile(f)
        missing = [c for c in self.columns if c not in pf.schema_arrow.names]
        if missing:
            raise ReaderError(
                f"{name}: column(s) {missing} not found; "
                f"the file has columns {pf.schema_arrow.names}"
            )
        have = [c for c in wanted if c in pf.schema_arrow.names]
        start = 0
        for batch in pf.iter_batches(batch_size=self.rows_per_block, columns=have):
            n = batch.num_rows
            # Text columns become strings; optional ones (an id) keep their type.
            arrays = [
                (batch.column(c).cast(pa.string()) if c in self.columns else batch.column(c))
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


def _strip_scheme(path: str) -> str:
    return path.split("://", 1)[1] if storage.is_uri(path) else os.path.abspath(path)


class _Block:
    def __init__(self, columns: list[str], path: str, start_row: int):
        self.columns, self.path, self.start = columns, path, start_row
        self.values: list[list] = [[] for _ in columns]
        self.status, self.raw, self.line = [], [], []

    def __len__(self) -> int:
        return len(self.line)

    @property
    def end(self) -> int:
        return self.start + len(self.line)

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
            pa.array(range(self.start, self.end), pa.int64()),
        ]
        return pa.table(arrays, names=self.columns + list(META_COLUMNS))


def read_header(f, fmt: str, path: str) -> list[str]:
    """Column names of a delimited file from its first non-blank record (for early, clear
    errors on the driver before any Ray task runs)."""
    for _, fields, reason, _ in parse_records(lines_of(f, 1 << 16), path=path, **dialect(fmt)):
        if reason == "header":
            return fields
    raise ReaderError(f"{path}: no header line (the file holds only blank lines)")
