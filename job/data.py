"""Reading the parallel corpus with Ray Data: text read as strings, normalised, classified, encoded.

Every row read ends up in exactly one place: used (status "ok") or rejected with a reason
(counted, and written to `rejects/<split>.csv` in the run directory). read = used + rejected.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data

from job import storage
from job.reader import FILE, LINE, RAW, ROWS_PER_BLOCK, STATUS, CorpusDatasource, ReaderError, read_header
from job.vocab import Vocabulary

OK = "ok"
# Reasons a row cannot be used, in the order they are checked.
REASONS = ("blank_line", "wrong_field_count", "unterminated_quote", "malformed_csv", "invalid_utf8", "duplicate_header",
           "missing_source", "missing_target", "empty_source", "empty_target", "too_long")

# Reading, normalising, filtering and encoding are light next to training and decoding; asking
# Ray for a quarter CPU each keeps them schedulable while Train workers or translator actors
# hold the whole CPUs (a full-CPU read task would otherwise wait forever behind them).
LIGHT_TASK = {"num_cpus": 0.25}

_WS = re.compile(r"[ \t\r\n\f\v]+")
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".tsv", ".tsv.gz", ".txt", ".txt.gz")


class DataError(ValueError):
    """A corpus problem, phrased for the user (file, column, what to do)."""


def normalise(text: str | None) -> str | None:
    """Unicode NFC, runs of ASCII whitespace collapsed to one space, ends stripped."""
    if text is None:
        return None
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local_files(path: str) -> list[str]:
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
    elif os.path.isdir(path):
        files = sorted(
            os.path.join(root, f) for root, _, names in os.walk(path) for f in names if not f.startswith((".", "_"))
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
    if not _is_remote(path):
        return _local_files(path)
    fs, p = pafs.FileSystem.from_uri(path)
    scheme = path.split("://", 1)[0] + "://"
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"corpus not found: {path}")
    files = sorted(scheme + i.path for i in fs.get_file_info(pafs.FileSelector(p, recursive=True))
                   if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_")))
    if not files:
        raise DataError(f"no files under {path}")
    return files


def detect_format(path: str, files: list[str] | None = None) -> str:
    names = files or [path]
    lower = [n.lower() for n in names]
    if all(n.endswith(_PARQUET) for n in lower):
        return "parquet"
    if all(n.endswith(_CSV) for n in lower):
        return "tsv" if all(".tsv" in n for n in lower) else ("text" if all(".txt" in n for n in lower) else "csv")
    raise DataError(f"{path}: cannot tell the format from the file names {names[:3]}; use .csv, .tsv, .txt or .parquet files")


def _columns_of(file: str, fmt: str) -> list[str]:
    fs, p = storage.fs_and_path(file)
    if fmt == "parquet":
        with fs.open_input_file(p) as f:
            return pq.read_schema(f).names
    with fs.open_input_stream(p, compression="detect") as f:
        try:
            return read_header(f, fmt, file)
        except ReaderError as exc:
            raise DataError(str(exc)) from None


@dataclass
class Corpus:
    """A corpus path resolved on the driver: its files, format and the columns a read yields."""

    path: str
    files: list[str]
    fmt: str
    columns: list[str]         # text columns (as strings)
    optional: tuple[str, ...]  # optional columns every file has (carried as they are)

    def dataset(self, rows_per_block: int = ROWS_PER_BLOCK) -> ray.data.Dataset:
        source = CorpusDatasource(self.files, fmt=self.fmt, columns=self.columns, optional_columns=self.optional,
                                  rows_per_block=rows_per_block)
        return ray.data.read_datasource(source, **LIGHT_TASK)


def open_corpus(path: str, text_columns: list[str], *, optional_columns: tuple[str, ...] = (),
                plain_text_column: str | None = None) -> Corpus:
    """Resolve and check a CSV/TSV/Parquet/plain-text corpus on the driver, before any Ray task.

    A missing path, an empty file, or a missing text column (the error names the file and the
    columns it has) is a DataError. Plain-text files (one sentence per line) have one column,
    named `plain_text_column` (default: the first text column).
    """
    files = list_files(path)
    fmt = detect_format(path, files)
    present = set(optional_columns)
    for file in files:
        fs, p = storage.fs_and_path(file)
        if fs.get_file_info(p).size == 0:
            raise DataError(f"{file}: the file is empty (0 bytes)")
        if fmt == "text":
            if len(text_columns) > 1:
                raise DataError(f"{file}: a plain-text file has one column (one sentence per line); "
                                f"columns {text_columns[1:]} need a CSV, TSV or Parquet file")
            present = set()
            continue
        names = _columns_of(file, fmt)
        missing = [c for c in text_columns if c not in names]
        if missing:
            raise DataError(f"{file}: column(s) {missing} not found; the file has columns {names}. "
                            f"Set data.source_column / data.target_column (or --column).")
        present &= set(names)
    columns = [plain_text_column or text_columns[0]] if fmt == "text" else list(text_columns)
    return Corpus(path, files, fmt, columns, tuple(c for c in optional_columns if c in present))


def read_table_dataset(path: str, text_columns: list[str], **kwargs) -> ray.data.Dataset:
    """Ray Dataset of a corpus (see open_corpus): the text columns as strings ("42" and "true"
    stay text), the optional columns present, and job.reader's row-accounting columns
    (_status: null or why the row could not be parsed, _raw, _file, _line, _row)."""
    return open_corpus(path, text_columns, **kwargs).dataset()


def _classify_batch(table: pa.Table, src_col: str, tgt_col: str | None) -> pa.Table:
    """Normalise text and give each row a status: ok, or why it cannot be used (the reader's
    parse reasons first, then missing/empty sides)."""
    parsed = table.column(STATUS).to_pylist()
    src = [normalise(x) for x in table.column(src_col).to_pylist()]
    tgt = [normalise(x) for x in table.column(tgt_col).to_pylist()] if tgt_col else [""] * len(src)
    status = []
    for p, s, t in zip(parsed, src, tgt):
        if p is not None:
            status.append(p)
        elif s is None:
            status.append("missing_source")
        elif t is None:
            status.append("missing_target")
        elif not s:
            status.append("empty_source")
        elif tgt_col and not t:
            status.append("empty_target")
        else:
            status.append(OK)
    return pa.table({"source": pa.array(src, pa.string()), "target": pa.array(tgt, pa.string()),
                     "status": pa.array(status, pa.string()), "raw": table.column(RAW),
                     "file": table.column(FILE), "line": table.column(LINE)})


@functools.lru_cache(maxsize=4)
def _vocab_from_key(key: str, files: tuple) -> Vocabulary:
    return Vocabulary.from_files(dict(files))


def _encode_batch(table: pa.Table, files: tuple, key: str, max_length: int) -> pa.Table:
    """Add src_ids / tgt_ids (list<int32>, no BOS/EOS); pairs over max_length become too_long."""
    vocab = _vocab_from_key(key, files)
    src = table.column("source").to_pylist()
    tgt = table.column("target").to_pylist()
    status = table.column("status").to_pylist()
    ok = [i for i, st in enumerate(status) if st == OK]
    src_ids: list = [[] for _ in src]
    tgt_ids: list = [[] for _ in src]
    if ok:
        for i, ids in zip(ok, vocab.encode_src([src[i] for i in ok])):
            src_ids[i] = ids
        for i, ids in zip(ok, vocab.encode_tgt([tgt[i] for i in ok])):
            tgt_ids[i] = ids
        for i in ok:
            # +1 for the EOS the model appends on each side.
            if len(src_ids[i]) + 1 > max_length or len(tgt_ids[i]) + 1 > max_length:
                status[i] = "too_long"
    list_type = pa.list_(pa.int32())
    return table.set_column(table.schema.get_field_index("status"), "status", pa.array(status, pa.string())).append_column(
        "src_ids", pa.array(src_ids, list_type)
    ).append_column("tgt_ids", pa.array(tgt_ids, list_type))


def vocab_key(vocab: Vocabulary) -> tuple[str, tuple]:
    files = tuple(sorted(vocab.to_files().items()))
    return hashlib.sha1(b"".join(k.encode() + v for k, v in files)).hexdigest(), files


@dataclass
class Split:
    """A prepared split: `ds` holds every row read, with a status column."""

    name: str
    path: str
    ds: ray.data.Dataset
    counts: Counter = field(default_factory=Counter)

    @property
    def read(self) -> int:
        return sum(self.counts.values())

    @property
    def used(self) -> int:
        return self.counts.get(OK, 0)

    def ok(self) -> ray.data.Dataset:
        return self.ds.filter(expr=f"status == '{OK}'", **LIGHT_TASK)

    def summary(self) -> dict:
        rejected = {k: v for k, v in sorted(self.counts.items()) if k != OK}
        return {"path": self.path, "read": self.read, "used": self.used, "rejected": rejected}


def classify(path: str, name: str, src_col: str, tgt_col: str | None) -> Split:
    """Read and normalise a split; nothing is dropped yet."""
    cols = [src_col] + ([tgt_col] if tgt_col else [])
    ds = read_table_dataset(path, cols)
    ds = ds.map_batches(_classify_batch, batch_format="pyarrow", fn_kwargs={"src_col": src_col, "tgt_col": tgt_col}, zero_copy_batch=True, **LIGHT_TASK)
    split = Split(name, path, ds.materialize())
    split.counts = count_status(split.ds)
    if split.read == 0:
        raise DataError(f"{path}: the {name} corpus is empty (no rows under the header)")
    return split


def encode(split: Split, vocab: Vocabulary, max_length: int) -> Split:
    key, files = vocab_key(vocab)
    ds = split.ds.map_batches(
        _encode_batch, batch_format="pyarrow", fn_kwargs={"files": files, "key": key, "max_length": max_length}, zero_copy_batch=True, **LIGHT_TASK
    )
    out = Split(split.name, split.path, ds.materialize())
    out.counts = count_status(out.ds)
    return out


def count_status(ds: ray.data.Dataset) -> Counter:
    counts: Counter = Counter()
    for batch in ds.select_columns(["status"], **LIGHT_TASK).iter_batches(batch_format="pyarrow", batch_size=65536):
        counts.update(batch.column("status").to_pylist())
    return counts


REJECT_COLUMNS = ("status", "file", "line", "source", "target", "raw")


def write_rejects(split: Split, out_path: str) -> int:
    """Write every rejected row to a CSV: reason, file, line (the record's first line in its
    file; empty for Parquet), source, target (normalised, when the row parsed) and raw (the
    line as read, when it did not). Returns the row count."""
    rejected = split.read - split.used
    if not rejected:
        return 0
    names = ["reason", *REJECT_COLUMNS[1:]]
    with storage.open_output(out_path) as sink:
        writer = None
        for batch in split.ds.select_columns(list(REJECT_COLUMNS), **LIGHT_TASK).iter_batches(batch_format="pyarrow", batch_size=65536):
            bad = batch.filter(pc.not_equal(batch.column("status"), OK))
            if bad.num_rows:
                table = pa.table([bad.column(c) for c in REJECT_COLUMNS], names=names)
                writer = writer or pacsv.CSVWriter(sink, table.schema)
                writer.write_table(table)
        if writer is not None:
            writer.close()
    return rejected


def iter_text_pairs(ds: ray.data.Dataset, batch_size: int = 65536):
    """(sources, targets) batches of the usable rows, for building the vocabulary."""
    for batch in ds.select_columns(["source", "target"], **LIGHT_TASK).iter_batches(batch_format="pyarrow", batch_size=batch_size):
        yield batch.column("source").to_pylist(), batch.column("target").to_pylist()


def list_column(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list<int32> column as (flat values, offsets) numpy arrays, slice-safe."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return values, offsets
