"""Finding and checking a corpus on the driver, before any Ray task: its files (a file, a
directory, a glob, or a URI prefix), their format (CSV, TSV, plain text, Parquet), their columns,
and the Ray Dataset that reads them with job.corpus.parsers's tolerant reader."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data

from job import storage
from job.config import ParallelFiles
from job.corpus.datasource import ROWS_PER_BLOCK, CorpusDatasource
from job.corpus.parsers import read_header
from job.errors import DataError
from job.runtime import LIGHT_TASK

_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
COMPRESSED = (".gz", ".bz2")  # by extension: a stream, no random access


def _local_files(path: str) -> list[str]:
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
    elif os.path.isdir(path):
        files = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(path)
            for f in names
            if not f.startswith((".", "_"))
        )
    elif os.path.isfile(path):
        files = [path]
    else:
        raise DataError(f"corpus not found: {path}")
    if not files:
        raise DataError(f"no files under {path}")
    return files


def list_files(path: str) -> list[str]:
    """The files of a corpus path: a file, a directory (recursively; names starting with . or _
    skipped), a local glob, or a file/prefix on any filesystem pyarrow reaches (s3://, gs://)."""
    if not storage.is_uri(path):
        return _local_files(path)
    fs, p = pafs.FileSystem.from_uri(path)
    scheme = path.split("://", 1)[0] + "://"
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"corpus not found: {path}")
    files = sorted(
        scheme + i.path
        for i in fs.get_file_info(pafs.FileSelector(p, recursive=True))
        if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))
    )
    if not files:
        raise DataError(f"no files under {path}")
    return files


def detect_format(path: str, files: list[str] | None = None) -> str:
    names = files or [path]
    lower = [n.lower() for n in names]
    if all(n.endswith(_PARQUET) for n in lower):
        return "parquet"
    if all(n.endswith(_CSV) for n in lower):
        if all(".tsv" in n for n in lower):
            return "tsv"
        return "text" if all(".txt" in n for n in lower) else "csv"
    raise DataError(
        f"{path}: cannot tell the format from the file names {names[:3]}; "
        f"use .csv, .tsv, .txt or .parquet files"
    )


def _columns_of(file: str, fmt: str) -> list[str]:
    fs, p = storage.fs_and_path(file)
    if fmt == "parquet":
        with fs.open_input_file(p) as f:
            return pq.read_schema(f).names
    with fs.open_input_stream(p, compression="detect") as f:
        return read_header(f, fmt, file)


@dataclass
class Corpus:
    """A corpus path resolved on the driver: its files, format and the columns a read yields."""

    path: str | ParallelFiles
    files: list[str]
    fmt: str
    columns: list[str]  # text columns (as strings)
    optional: tuple[str, ...]  # optional columns every file has (carried as they are)
    targets: dict[str, str] | None = None  # parallel: the target file of each source file

    def dataset(self, rows_per_block: int = ROWS_PER_BLOCK) -> ray.data.Dataset:
        """The text columns as strings ("42" and "true" stay text), the optional columns, and
        job.corpus.parsers's row-accounting columns (_status, _raw, _file, _line, _row)."""
        source = CorpusDatasource(
            self.files,
            fmt=self.fmt,
            columns=self.columns,
            optional_columns=self.optional,
            rows_per_block=rows_per_block,
            targets=self.targets,
        )
        return ray.data.read_datasource(source, **LIGHT_TASK)

    def estimate_rows(self) -> int:
        """Rows, roughly and cheaply: Parquet metadata, or file sizes over the mean line length
        of the first file's first MB (compressed files counted four times their size)."""
        if self.fmt == "parquet":
            return sum(storage.parquet_rows(f) for f in self.files)
        return _estimate(self.files)

    def count_rows(self) -> int | None:
        """Rows, cheaply (Parquet metadata; lines for CSV/TSV/text, minus headers), for a
        progress bar; None when unknown (remote inputs, compressed files). Quoted newlines
        inside CSV fields make it an over-estimate."""
        total = 0
        for f in self.files:
            if storage.is_uri(f) or (self.fmt != "parquet" and f.endswith(COMPRESSED)):
                return None
            if self.fmt == "parquet":
                total += storage.parquet_rows(f)
                continue
            lines, last = 0, b"\n"
            with open(f, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    lines, last = lines + chunk.count(b"\n"), chunk[-1:]
            # A last line without a newline still counts; CSV/TSV headers do not.
            total += lines + (last != b"\n") - (0 if self.fmt in ("text", "parallel") else 1)
        return total


def _estimate(files: list[str]) -> int:
    """Rows of line-based files from their sizes and the mean line length of the first MB."""
    fs, p = storage.fs_and_path(files[0])
    with fs.open_input_stream(p, compression="detect") as f:
        head = f.read(1 << 20)
    per_line = len(head) / max(1, head.count(b"\n"))
    total = 0
    for file in files:
        fs, p = storage.fs_and_path(file)
        size = fs.get_file_info(p).size or 0
        total += size * (4 if file.lower().endswith(COMPRESSED) else 1)  # a typical text ratio
    return max(1, int(total / per_line))


def open_corpus(
    path: str | ParallelFiles,
    text_columns: list[str],
    *,
    optional_columns: tuple[str, ...] = (),
    plain_text_column: str | None = None,
) -> Corpus:
    """Resolve and check a CSV/TSV/Parquet/plain-text corpus on the driver, before any Ray task.

    A missing path, an empty file, or a missing text column (the error names the file and the
    columns it has) is a DataError. Plain-text files (one sentence per line) have one column,
    named `plain_text_column` (default: the first text column). Two line-aligned files
    (ParallelFiles) give the first two text columns, or only the source file's text when one
    column is asked for.
    """
    if isinstance(path, ParallelFiles):
        return _parallel(path, text_columns)
    files = list_files(path)
    fmt = detect_format(path, files)
    present = set(optional_columns)
    for file in files:
        fs, p = storage.fs_and_path(file)
        if fs.get_file_info(p).size == 0:
            raise DataError(f"{file}: the file is empty (0 bytes)")
        if fmt == "text":
            if len(text_columns) > 1:
                raise DataError(
                    f"{file}: a plain-text file has one column (one sentence per line); "
                    f"columns {text_columns[1:]} need a CSV, TSV or Parquet file"
                )
            present = set()
            continue
        names = _columns_of(file, fmt)
        missing = [c for c in text_columns if c not in names]
        if missing:
            raise DataError(
                f"{file}: column(s) {missing} not found; the file has columns {names}. "
                f"Set data.source_column / data.target_column (or --column)."
            )
        present &= set(names)
    columns = [plain_text_column or text_columns[0]] if fmt == "text" else list(text_columns)
    return Corpus(path, files, fmt, columns, tuple(c for c in optional_columns if c in present))


def _parallel(pair: ParallelFiles, text_columns: list[str]) -> Corpus:
    files = {side: list_files(getattr(pair, side)) for side in ("source", "target")}
    for side, found in files.items():
        if len(found) != 1:
            raise DataError(
                f"{getattr(pair, side)}: a parallel corpus side is one file; found {len(found)}"
            )
        fs, p = storage.fs_and_path(found[0])
        if fs.get_file_info(p).size == 0:
            raise DataError(f"{found[0]}: the file is empty (0 bytes)")
    source, target = files["source"][0], files["target"][0]
    if len(text_columns) == 1:
        return Corpus(pair, [source], "text", list(text_columns), ())
    if len(text_columns) > 2:
        raise DataError(f"{pair}: two line-aligned files hold two columns, not {text_columns}")
    return Corpus(pair, [source], "parallel", list(text_columns), (), {source: target})
