"""A corpus cut into pieces that Ray tasks read on their own, so that the per-row work of one
10 GB file spreads over every CPU of the cluster as well as that of ten thousand small files,
with every row read exactly once.

- Parquet: a piece per row group.
- Uncompressed line-based files (CSV, TSV, plain text, line-aligned pairs): pieces of about
  `piece_bytes`. Scan tasks count the newlines and quote characters of each span of the file in
  parallel; a piece then finds its exact start (the first line start at or after its span, and
  for CSV the first one outside a quoted field: an even number of quotes before it) and knows
  its first line number, and its end the same way from the next span. TSV, text and pairs are a
  record per line, so this is exact. A CSV piece also checks that its last record ends exactly
  where the next piece starts ("landed"); a stray quote can make the quote count lie, and a file
  with a piece that did not land is read again as one piece (job.corpus.prepare), so it stays exact.
- Compressed files: a piece per file (a gzip stream has no random access).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from job import storage
from job.corpus.datasource import ROWS_PER_BLOCK, parquet_blocks, record_blocks
from job.corpus.files import COMPRESSED, Corpus
from job.corpus.parsers import (
    dialect,
    lines_of,
    parse_parallel_lines,
    parse_records,
    parse_text_lines,
    read_header,
)
from job.errors import DataError

PIECE_BYTES = 32 << 20
_QUOTE_OR_NEWLINE = re.compile(rb'["\n]')


@dataclass(frozen=True)
class Span:
    """Where a piece starts, before it is exact: a byte offset and the counts before it."""

    offset: int
    newlines: int  # newlines in [0, offset)
    quotes: int  # quote characters in [0, offset) (CSV)


@dataclass(frozen=True)
class Piece:
    """A part of one corpus file that one task reads: a row group, or a byte span of lines."""

    file: str
    fmt: str
    index: int = 0
    count: int = 1  # pieces of this file
    start: Span | None = None  # None: from the beginning of the file
    end: Span | None = None  # None: to its end
    header: tuple[str, ...] | None = None  # a delimited file's header, for pieces after the first
    row_group: int | None = None  # Parquet
    target: str | None = None  # line-aligned pairs: the target file
    target_spans: tuple[Span, ...] = field(default=(), repr=False)  # ... and its scan

    @property
    def name(self) -> str:
        return f"{self.file} piece {self.index + 1}/{self.count}"

    def whole(self) -> Piece:
        """The file as one piece (the fallback for a CSV file whose pieces did not land)."""
        return replace(self, index=0, count=1, start=None, end=None, header=None)


MIN_PIECE_BYTES = 1 << 20


def piece_size(corpus: Corpus, piece_bytes: int, cpus: float) -> int:
    """At most piece_bytes, and small enough for two pieces per CPU of the cluster (1 MB at the
    least): a corpus of a few files spreads over every CPU too."""
    total = sum(_size(f) for f in corpus.files) if corpus.fmt != "parquet" else 0
    return int(min(piece_bytes, max(MIN_PIECE_BYTES, total / max(1.0, 2 * cpus))))


def plan(corpus: Corpus, piece_bytes: int = PIECE_BYTES) -> list[Piece]:
    """The pieces of a corpus's files, in file order."""
    out: list[Piece] = []
    for file in corpus.files:
        out += _file_pieces(corpus, file, piece_bytes)
    return out


def _file_pieces(corpus: Corpus, file: str, piece_bytes: int) -> list[Piece]:
    fmt = corpus.fmt
    if fmt == "parquet":
        fs, p = storage.fs_and_path(file)
        with fs.open_input_file(p) as f:
            groups = pq.ParquetFile(f).metadata.num_row_groups
        return [Piece(file, fmt, g, max(groups, 1), row_group=g) for g in range(max(groups, 1))]
    target = (corpus.targets or {}).get(file)
    size = _size(file)
    compressed = any(f.lower().endswith(COMPRESSED) for f in (file, target) if f)
    if compressed or size <= piece_bytes:
        return [Piece(file, fmt, target=target)]
    spans = scan(file, piece_bytes)
    if target is not None:
        target_spans = scan(target, piece_bytes)
        # the end span counts a last line without a newline too
        lines = (spans[-1].newlines, target_spans[-1].newlines)
        if lines[0] != lines[1]:
            raise DataError(
                f"{file} has {lines[0]} lines but {target} has {lines[1]}: "
                "the two files of a parallel corpus must be line-aligned"
            )
    header = None
    if fmt in ("csv", "tsv"):
        fs, p = storage.fs_and_path(file)
        with fs.open_input_stream(p) as f:
            header = tuple(read_header(f, fmt, file))
    n = len(spans) - 1  # the last span is the end of the file
    return [
        Piece(
            file, fmt, i, n,
            start=spans[i] if i else None,
            end=spans[i + 1] if i + 1 < n else None,
            header=header if i else None,
            target=target,
            target_spans=tuple(target_spans) if target is not None else (),
        )
        for i in range(n)
    ]  # fmt: skip


def _size(file: str) -> int:
    fs, p = storage.fs_and_path(file)
    return fs.get_file_info(p).size


@ray.remote(num_cpus=1)
def _scan_span(file: str, offset: int, length: int) -> tuple[int, int, bool]:
    """Newlines and quote characters in [offset, offset + length), and whether it ends in one."""
    fs, p = storage.fs_and_path(file)
    newlines = quotes = 0
    last = b""
    with fs.open_input_file(p) as f:
        f.seek(offset)
        left = length
        while left > 0:
            chunk = f.read(min(left, 8 << 20))
            if not chunk:
                break
            newlines += chunk.count(b"\n")
            quotes += chunk.count(b'"')
            last, left = chunk[-1:], left - len(chunk)
    return newlines, quotes, last == b"\n"


def scan(file: str, piece_bytes: int) -> list[Span]:
    """The spans of a file (one per piece_bytes), with the counts before each, counted by Ray
    tasks in parallel; the last element is the end of the file."""
    size = _size(file)
    offsets = list(range(0, size, piece_bytes))
    counts = ray.get([_scan_span.remote(file, o, piece_bytes) for o in offsets])
    spans, newlines, quotes = [], 0, 0
    for offset, (n, q, _) in zip(offsets, counts):
        spans.append(Span(offset, newlines, quotes))
        newlines, quotes = newlines + n, quotes + q
    ends_in_newline = counts[-1][2] if counts else True
    spans.append(Span(size, newlines + (0 if ends_in_newline else 1), quotes))
    return spans


def _exact_start(f, span: Span | None, quoted: bool) -> tuple[int, int | None]:
    """(byte offset, 1-based line number) of the first line start at or after span.offset; for
    CSV (`quoted`) the first one after an even number of quote characters. None for the line
    when there is none before the end of the file (the offset is then the file's size)."""
    if span is None:
        return 0, 1
    size = f.size()
    f.seek(span.offset - 1)
    parity = span.quotes % 2 if quoted else 0  # quote characters before span.offset
    if f.read(1) == b"\n" and not parity:
        return span.offset, span.newlines + 1 if span.offset < size else None
    newlines, pos = span.newlines, span.offset
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            return pos, None
        for m in _QUOTE_OR_NEWLINE.finditer(chunk) if quoted else re.finditer(rb"\n", chunk):
            if m.group() == b'"':
                parity ^= 1
                continue
            newlines += 1
            if not parity:
                at = pos + m.end()
                return at, newlines + 1 if at < size else None
        pos += len(chunk)


def _offset_of_line(f, spans: tuple[Span, ...], line: int) -> int:
    """Byte offset where 1-based `line` starts, from a scan of the file."""
    skip = line - 1  # newlines before the line
    if skip == 0:
        return 0
    span = max((s for s in spans[:-1] if s.newlines < skip), key=lambda s: s.offset)
    f.seek(span.offset)
    seen, pos = span.newlines, span.offset
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            raise DataError(f"line {line} is past the end of the file")
        n = chunk.count(b"\n")
        if seen + n >= skip:
            at = -1
            for _ in range(skip - seen):
                at = chunk.index(b"\n", at + 1)
            return pos + at + 1
        seen, pos = seen + n, pos + len(chunk)


@dataclass
class PieceRead:
    """What reading a piece found besides its rows: whether its last record ended exactly where
    the next piece starts (always, except for a CSV piece cut inside a quoted field)."""

    landed: bool = True


def read_piece(
    piece: Piece,
    columns: list[str],
    wanted: list[str],
    result: PieceRead,
    rows_per_block: int = ROWS_PER_BLOCK,
) -> Iterator[pa.Table]:
    """The rows of a piece as blocks with job.corpus.datasource's columns (`_row` null for pieces of
    delimited files that do not start at the beginning of the file)."""
    fs, p = storage.fs_and_path(piece.file)
    if piece.fmt == "parquet":
        with fs.open_input_file(p) as f:
            yield from parquet_blocks(
                f, piece.file, columns, wanted, rows_per_block, piece.row_group
            )
        return
    whole = piece.start is None and piece.end is None
    with _open(fs, p, whole) as f:
        quoted = piece.fmt == "csv"
        start, first_line = (0, 1) if whole else _exact_start(f, piece.start, quoted)
        if first_line is None:
            return  # the previous piece reads to the end of the file
        end_line = None
        if piece.end is not None:
            _, end_line = _exact_start(f, piece.end, quoted)
        if not whole:
            f.seek(start)
        count = None if end_line is None else end_line - first_line
        lines = lines_of(f)
        if piece.fmt in ("text", "parallel"):
            lines = islice(lines, count) if count is not None else lines
            if piece.fmt == "text":
                records = parse_text_lines(lines, first_line)
                index = {columns[0]: 0}
                yield from record_blocks(
                    records, columns, wanted, piece.file, index, rows_per_block, first_line - 1
                )
                return
            yield from _pair_blocks(
                piece, lines, first_line, count, columns, wanted, rows_per_block
            )
            return
        header = list(piece.header) if piece.header else None
        records = parse_records(
            lines, path=piece.file, first_line=first_line, header=header, **dialect(piece.fmt)
        )
        if end_line is not None:
            records = _until(records, end_line, result)
        index = {c: i for i, c in enumerate(header)} if header else None
        yield from record_blocks(
            records, columns, wanted, piece.file, index, rows_per_block, None if header else 0
        )


def _open(fs, path: str, whole: bool):
    """A whole file as a stream (decompressed by extension), or a seekable uncompressed one."""
    return fs.open_input_stream(path, compression="detect") if whole else fs.open_input_file(path)


def _until(records, end_line: int, result: PieceRead):
    """The records that start before end_line; result.landed: the next one starts on it (a
    record that ran on to the end of the file ran over the next piece's lines)."""
    for record in records:
        if record[0] >= end_line:
            result.landed = record[0] == end_line
            return
        yield record
    result.landed = False


def _pair_blocks(piece, lines, first_line, count, columns, wanted, rows_per_block):
    fs, p = storage.fs_and_path(piece.target)
    whole = count is None and first_line == 1
    with _open(fs, p, whole) as t:
        if not whole:
            t.seek(_offset_of_line(t, piece.target_spans, first_line))
        target = lines_of(t)
        if count is not None:
            target = islice(target, count)
        records = parse_parallel_lines(lines, target, piece.file, piece.target, first_line)
        index = {c: i for i, c in enumerate(columns)}
        yield from record_blocks(
            records, columns, wanted, piece.file, index, rows_per_block, first_line - 1
        )
