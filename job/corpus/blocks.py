"""What happens to the rows of one block of the corpus, inside a Ray task: normalised and given a
status (ok, or why the row cannot be used), encoded to id lists, rejected rows written aside,
and a seeded random sample kept for the vocabulary. job.corpus.prepare runs these over a corpus's
pieces; nothing here moves rows to the driver.

Every row read ends up in exactly one place: used (status "ok") or rejected with a reason
(counted, and written to `rejects/<split>/` in the run directory). read = used + rejected.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from job import storage
from job.corpus.datasource import FILE, LINE, RAW, STATUS
from job.corpus.normalise import OK, normalise, text_status
from job.corpus.vocab import Vocabulary

# The columns of a classified block; rejects files have these with "status" named "reason".
CLASSIFIED = ("status", "file", "line", "source", "target", "raw")
REJECT_COLUMNS = ("reason", "file", "line", "source", "target", "raw")
ENCODED = ("src_ids", "tgt_ids")


def classify_block(table: pa.Table, src_col: str, tgt_col: str | None) -> pa.Table:
    """Normalise text and give each row a status: ok, or why it cannot be used (the reader's
    parse reasons first, then job.corpus.normalise's rules). Columns: CLASSIFIED."""
    parsed = table.column(STATUS).to_pylist()
    src = [normalise(x) for x in table.column(src_col).to_pylist()]
    tgt = [normalise(x) for x in table.column(tgt_col).to_pylist()] if tgt_col else [""] * len(src)
    has_target = tgt_col is not None
    status = [p or text_status(s, t, has_target=has_target) for p, s, t in zip(parsed, src, tgt)]
    return pa.table({
        "status": pa.array(status, pa.string()), "file": table.column(FILE),
        "line": table.column(LINE), "source": pa.array(src, pa.string()),
        "target": pa.array(tgt, pa.string()), "raw": table.column(RAW),
    })  # fmt: skip


def count_status(table: pa.Table) -> Counter:
    counts = pc.value_counts(table.column("status"))
    return Counter({v["values"].as_py(): v["counts"].as_py() for v in counts})


def split_ok(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(usable rows, rejected rows) of a classified or encoded block."""
    ok = pc.equal(table.column("status"), OK)
    return table.filter(ok), table.filter(pc.invert(ok))


def write_rejects(tables: list[pa.Table], path: str) -> int:
    """Rejected rows as CSV: reason, file, line (the record's first line in its file; the row
    for Parquet), source, target (normalised, when the row parsed) and raw (the line as read,
    when it did not). Nothing is written when there are none. Returns the row count."""
    rows = sum(t.num_rows for t in tables)
    if rows:
        with storage.open_output(path) as sink:
            writer = None
            for t in tables:
                if t.num_rows:
                    out = pa.table([t.column(c) for c in CLASSIFIED], names=list(REJECT_COLUMNS))
                    writer = writer or pacsv.CSVWriter(sink, out.schema)
                    writer.write_table(out)
            writer.close()
    return rows


def sample_rows(table: pa.Table, rate: float, cap: int, seed: list[int]) -> pa.Table:
    """A seeded Bernoulli sample of usable rows for the vocabulary: columns key (uniform random),
    source, target; the `cap` smallest keys at most. The driver keeps the smallest keys of all
    blocks, which makes a uniform sample of the whole corpus (bottom-k sampling)."""
    keys = pa.array(np.random.default_rng(seed).random(table.num_rows))
    chosen = pc.less(keys, rate)
    drawn = pa.table({
        "key": keys.filter(chosen), "source": table.column("source").filter(chosen),
        "target": table.column("target").filter(chosen),
    })  # fmt: skip
    return smallest_keys(drawn, cap)


def smallest_keys(table: pa.Table, cap: int) -> pa.Table:
    if table.num_rows <= cap:
        return table
    return table.take(pc.sort_indices(table.column("key"))[:cap])


@functools.lru_cache(maxsize=4)
def _vocab_from_key(key: str, files: tuple) -> Vocabulary:
    return Vocabulary.from_files(dict(files))


def vocab_key(vocab: Vocabulary) -> tuple[str, tuple]:
    """A content hash of the vocabulary and its files, so encode tasks build it once each."""
    files = tuple(sorted(vocab.to_files().items()))
    return hashlib.sha1(b"".join(k.encode() + v for k, v in files)).hexdigest(), files


def encode_block(table: pa.Table, files: tuple, key: str, max_length: int) -> pa.Table:
    """Usable rows with src_ids / tgt_ids added (list<int32>, no BOS/EOS); pairs longer than
    max_length (EOS included) get the status too_long."""
    vocab = _vocab_from_key(key, files)
    src_ids = vocab.encode_src(table.column("source").to_pylist())
    tgt_ids = vocab.encode_tgt(table.column("target").to_pylist())
    # +1 for the EOS the model appends on each side.
    status = [
        OK if len(s) < max_length and len(t) < max_length else "too_long"
        for s, t in zip(src_ids, tgt_ids)
    ]
    list_type = pa.list_(pa.int32())
    table = table.set_column(
        table.schema.get_field_index("status"), "status", pa.array(status, pa.string())
    )
    return table.append_column("src_ids", pa.array(src_ids, list_type)).append_column(
        "tgt_ids", pa.array(tgt_ids, list_type)
    )
