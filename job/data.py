"""Preparing the parallel corpus with Ray Data: rows classified, normalised, encoded, rejects
written aside.

Every row read ends up in exactly one place: used (status "ok") or rejected with a reason
(counted, and written to `rejects/<split>.csv` in the run directory). read = used + rejected.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import ray.data

from job import storage
from job.config import ParallelFiles
from job.corpus import open_corpus
from job.datasource import FILE, LINE, RAW, STATUS
from job.errors import DataError
from job.runtime import LIGHT_TASK
from job.text import OK, normalise, text_status
from job.vocab import Vocabulary


def _classify_batch(table: pa.Table, src_col: str, tgt_col: str | None) -> pa.Table:
    """Normalise text and give each row a status: ok, or why it cannot be used (the reader's
    parse reasons first, then job.text's rules)."""
    parsed = table.column(STATUS).to_pylist()
    src = [normalise(x) for x in table.column(src_col).to_pylist()]
    tgt = [normalise(x) for x in table.column(tgt_col).to_pylist()] if tgt_col else [""] * len(src)
    has_target = tgt_col is not None
    status = [p or text_status(s, t, has_target=has_target) for p, s, t in zip(parsed, src, tgt)]
    return pa.table({
        "source": pa.array(src, pa.string()), "target": pa.array(tgt, pa.string()),
        "status": pa.array(status, pa.string()), "raw": table.column(RAW),
        "file": table.column(FILE), "line": table.column(LINE),
    })  # fmt: skip


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
    table = table.set_column(
        table.schema.get_field_index("status"), "status", pa.array(status, pa.string())
    )
    return table.append_column("src_ids", pa.array(src_ids, list_type)).append_column(
        "tgt_ids", pa.array(tgt_ids, list_type)
    )


def vocab_key(vocab: Vocabulary) -> tuple[str, tuple]:
    """A content hash of the vocabulary and its files, so encode tasks build it once each."""
    files = tuple(sorted(vocab.to_files().items()))
    return hashlib.sha1(b"".join(k.encode() + v for k, v in files)).hexdigest(), files


@dataclass
class Split:
    """A prepared split: `ds` holds every row read, with a status column."""

    name: str
    path: str | ParallelFiles
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
        return {"path": str(self.path), "read": self.read, "used": self.used, "rejected": rejected}


def classify(path: str | ParallelFiles, name: str, src_col: str, tgt_col: str | None) -> Split:
    """Read and normalise a split; nothing is dropped yet."""
    cols = [src_col] + ([tgt_col] if tgt_col else [])
    ds = open_corpus(path, cols).dataset()
    ds = ds.map_batches(
        _classify_batch,
        batch_format="pyarrow",
        fn_kwargs={"src_col": src_col, "tgt_col": tgt_col},
        zero_copy_batch=True,
        **LIGHT_TASK,
    )
    split = Split(name, path, ds.materialize())
    split.counts = count_status(split.ds)
    if split.read == 0:
        raise DataError(f"{path}: the {name} corpus is empty (no rows under the header)")
    return split


def encode(split: Split, vocab: Vocabulary, max_length: int) -> Split:
    key, files = vocab_key(vocab)
    ds = split.ds.map_batches(
        _encode_batch,
        batch_format="pyarrow",
        fn_kwargs={"files": files, "key": key, "max_length": max_length},
        zero_copy_batch=True,
        **LIGHT_TASK,
    )
    out = Split(split.name, split.path, ds.materialize())
    out.counts = count_status(out.ds)
    return out


def count_status(ds: ray.data.Dataset) -> Counter:
    counts: Counter = Counter()
    statuses = ds.select_columns(["status"], **LIGHT_TASK)
    for batch in statuses.iter_batches(batch_format="pyarrow", batch_size=65536):
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
    rows = split.ds.select_columns(list(REJECT_COLUMNS), **LIGHT_TASK)
    with storage.open_output(out_path) as sink:
        writer = None
        for batch in rows.iter_batches(batch_format="pyarrow", batch_size=65536):
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
    pairs = ds.select_columns(["source", "target"], **LIGHT_TASK)
    for batch in pairs.iter_batches(batch_format="pyarrow", batch_size=batch_size):
        yield batch.column("source").to_pylist(), batch.column("target").to_pylist()
