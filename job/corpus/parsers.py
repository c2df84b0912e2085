"""Parsers for corpora nobody cleaned, CSV/TSV/plain text and line-aligned text pairs: every
physical line is accounted for. Pure Python; job.corpus.datasource runs them inside Ray Data read
tasks (streamed, any pyarrow filesystem, .gz/.bz2 by extension).

pyarrow's CSV reader is all-or-nothing: one bad row (a stray quote, a wrong field count, a byte
that is not UTF-8) fails the whole file. These parse with Python's csv module, one record at a
time, and yield every record: usable ones with their fields as strings ("42", "true" stay text),
unusable ones with the reason and the raw text (undecodable bytes shown as \\xNN), never a
missing row.

Reasons: blank_line, wrong_field_count, unterminated_quote, malformed_csv (csv module error),
invalid_utf8, duplicate_header (a repeated header line, e.g. from concatenated files). A UTF-8
byte-order mark and CRLF line ends are accepted silently. Line numbers are the record's first
physical line, 1-based, the header being line 1.

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
import re
from collections import deque
from collections.abc import Iterator
from itertools import zip_longest

from job.errors import DataError

_BAD_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that did not decode, kept by surrogateescape
_BOM = "\ufeff"


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

    def __init__(self, lines: Iterator[str], max_record_lines: int, first_line: int = 1):
        self.lines, self.pending, self.taken = lines, deque(), []
        self.next_line = first_line  # physical line number of the next line handed out
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
    first_line: int = 1,
    header: list[str] | None = None,
) -> Iterator[tuple[int, list[str] | None, str | None, str | None]]:
    """(line, fields, reason, raw) per record of a delimited file; the first record is the header
    (yielded with reason "header"). fields is None when reason is set. A quoted field may span
    at most max_record_lines lines. quoting=csv.QUOTE_NONE: quotes are plain text.

    A piece of a file (job.corpus.pieces) starts at line `first_line` with the file's `header`
    known: every record is then data."""
    src = _PushbackLines(lines, max_record_lines, first_line)
    reader = csv.reader(src, delimiter=delimiter, quoting=quoting, strict=True)
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


def parse_parallel_lines(
    source: Iterator[str],
    target: Iterator[str],
    source_name: str,
    target_name: str,
    first_line: int = 1,
) -> Iterator[tuple[int, list[str] | None, str | None, str | None]]:
    """(line, [source, target], reason, raw) per line of two line-aligned plain-text files (Moses
    style: corpus.en + corpus.fr). Files of different lengths are a DataError naming both and
    their line counts (found when the shorter one ends)."""
    counts = [0, 0]
    pairs = zip_longest(parse_text_lines(source, first_line), parse_text_lines(target, first_line))
    for s, t in pairs:
        counts[0] += s is not None
        counts[1] += t is not None
        if s is None or t is None:
            continue  # count the longer file to the end, for the message
        (number, src, s_bad, s_raw), (_, tgt, t_bad, t_raw) = s, t
        if s_bad or t_bad:
            yield number, None, "invalid_utf8", f"{s_raw or src[0]}\t{t_raw or tgt[0]}"
        else:
            yield number, [src[0], tgt[0]], None, None
    if counts[0] != counts[1]:
        raise DataError(
            f"{source_name} has {counts[0]} lines but {target_name} has {counts[1]}: "
            "the two files of a parallel corpus must be line-aligned"
        )


def parse_text_lines(
    lines: Iterator[str], first_line: int = 1
) -> Iterator[tuple[int, list[str] | None, str | None, str | None]]:
    """(line, [text], reason, raw) per line of a plain-text file (one sentence per line)."""
    for number, text in enumerate(lines, start=first_line):
        if number == 1 and text.startswith(_BOM):
            text = text[1:]
        text = text.rstrip("\n").rstrip("\r")
        if _BAD_UTF8.search(text):
            yield number, None, "invalid_utf8", _show(text)
        else:
            yield number, [text], None, None


def read_header(f, fmt: str, path: str) -> list[str]:
    """Column names of a delimited file from its first non-blank record (for early, clear
    errors on the driver before any Ray task runs)."""
    for _, fields, reason, _ in parse_records(lines_of(f, 1 << 16), path=path, **dialect(fmt)):
        if reason == "header":
            return fields
    raise ReaderError(f"{path}: no header line (the file holds only blank lines)")
