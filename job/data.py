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
import ray
import ray.data

from job import storage
from job.vocab import Vocabulary

OK = "ok"
# Reasons a row cannot be used, in the order they are checked.
REASONS = ("missing_source", "missing_target", "empty_source", "empty_target", "too_long")

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


def detect_format(path: str, files: list[str] | None = None) -> str:
    names = files or [path]
    lower = [n.lower() for n in names]
    if all(n.endswith(_PARQUET) for n in lower):
        return "parquet"
    if all(n.endswith(_CSV) for n in lower):
        return "tsv" if all(".tsv" in n for n in lower) else ("text" if all(".txt" in n for n in lower) else "csv")
    raise DataError(f"{path}: cannot tell the format from the file names {names[:3]}; use .csv, .tsv, .txt or .parquet files")


def read_table_dataset(path: str, text_columns: list[str], *, plain_text_column: str | None = None) -> ray.data.Dataset:
    """Read CSV/TSV/Parquet (or plain text, one sentence per line) with Ray Data.

    `text_columns` are read as strings (no type inference: "42" and "true" stay text) and must
    exist: a missing one is an error listing the columns the file has.
    """
    files = None if _is_remote(path) else _local_files(path)
    fmt = detect_format(path, files)
    empty = [f for f in files or [] if os.path.getsize(f) == 0]
    if empty:
        raise DataError(f"{empty[0]}: the file is empty (0 bytes)")
    paths = files or path
    if fmt == "parquet":
        ds = ray.data.read_parquet(paths, **LIGHT_TASK)
    elif fmt == "text":
        ds = ray.data.read_text(paths, drop_empty_lines=False, **LIGHT_TASK)
        ds = ds.rename_columns({"text": plain_text_column or text_columns[0]})
    else:
        delimiter = "\t" if fmt == "tsv" else ","
        ds = ray.data.read_csv(
            paths,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}, strings_can_be_null=False, quoted_strings_can_be_null=False),
            read_options=pacsv.ReadOptions(use_threads=False),
            **LIGHT_TASK,
        )
    try:
        schema = ds.schema()
    except Exception as exc:  # pyarrow's parse errors arrive wrapped by Ray; keep their message
        raise DataError(f"{path}: cannot read as {fmt}: {_root_message(exc)}") from None
    if schema is None:
        raise DataError(f"{path}: the corpus is empty (no rows)")
    names = schema.names
    missing = [c for c in text_columns if c not in names]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; the file has columns {names}. Set data.source_column / data.target_column (or --column).")
    return ds


def _root_message(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


def _classify_batch(table: pa.Table, src_col: str, tgt_col: str | None) -> pa.Table:
    """Normalise text and give each row a status (ok or the reason it cannot be used)."""
    src = [normalise(x) for x in table.column(src_col).to_pylist()]
    tgt = [normalise(x) for x in table.column(tgt_col).to_pylist()] if tgt_col else [""] * len(src)
    status = []
    for s, t in zip(src, tgt):
        if s is None:
            status.append("missing_source")
        elif t is None:
            status.append("missing_target")
        elif not s:
            status.append("empty_source")
        elif tgt_col and not t:
            status.append("empty_target")
        else:
            status.append(OK)
    cols = {"source": pa.array(src, pa.string()), "target": pa.array(tgt, pa.string()), "status": pa.array(status, pa.string())}
    return pa.table(cols)


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


def write_rejects(split: Split, out_path: str) -> int:
    """Write every rejected row (reason, source, target) to a CSV; returns the row count."""
    rejected = split.read - split.used
    if not rejected:
        return 0
    schema = pa.schema([("reason", pa.string()), ("source", pa.string()), ("target", pa.string())])
    with storage.open_output(out_path) as sink:
        writer = pacsv.CSVWriter(sink, schema)
        for batch in split.ds.select_columns(["status", "source", "target"], **LIGHT_TASK).iter_batches(batch_format="pyarrow", batch_size=65536):
            bad = batch.filter(pc.not_equal(batch.column("status"), OK))
            if bad.num_rows:
                writer.write_table(pa.table([bad.column("status"), bad.column("source"), bad.column("target")], schema=schema))
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
