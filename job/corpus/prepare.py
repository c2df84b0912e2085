"""The corpus prepared once, on the cluster, into Parquet that training streams every epoch.

Two passes of Ray Data tasks over the pieces of each split (job.corpus.pieces), spread over
every CPU:
    1. read, normalise, classify: usable rows to `staging/<split>/`, rejected ones written by
       the task to `rejects/<split>/<piece>.csv`, a bounded random sample to
       `staging/sample/`, counts returned;
    2. encode with the vocabulary (trained once, in one Ray task, on the sample): id lists to
       `prepared/<split>/<piece>.parquet` (valid keeps its reference text), pairs over
       data.max_length to `rejects/<split>/<piece>.too_long.csv`.
Only counts reach the driver: the sample (at most vocab.max_sentences sentences) is streamed
from its parts into the vocabulary trainer's task. The manifest (job.corpus.manifest) written
last says what the prepared data was made from.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from job import storage
from job.config import ParallelFiles, VocabConfig
from job.corpus.blocks import (
    ENCODED,
    classify_block,
    count_status,
    encode_block,
    sample_rows,
    smallest_keys,
    split_ok,
    vocab_key,
    write_rejects,
)
from job.corpus.files import open_corpus
from job.corpus.normalise import OK
from job.corpus.pieces import PIECE_BYTES, Piece, PieceRead, piece_size, plan, read_piece
from job.corpus.vocab import Vocabulary, build_vocab
from job.errors import DataError, UserError, user_error_of

SAMPLE_OVERDRAW = 1.1  # sample rate margin over (sample size / estimated rows)


@dataclass
class SplitData:
    """A split after a pass: counts by status, and its Parquet parts with their row counts."""

    name: str
    path: str
    counts: Counter = field(default_factory=Counter)
    parts: list[tuple[str, int]] = field(default_factory=list)  # (file, rows)

    @property
    def read(self) -> int:
        return sum(self.counts.values())

    @property
    def used(self) -> int:
        return self.counts.get(OK, 0)

    def summary(self) -> dict:
        rejected = {k: v for k, v in sorted(self.counts.items()) if k != OK}
        return {"path": self.path, "read": self.read, "used": self.used, "rejected": rejected}


@dataclass
class Sample:
    """The vocabulary's sample: `size` pairs at most, drawn at `rate` per usable row (set from
    the corpus's estimated rows when pass 1 opens it). Each task writes the rows it drew with
    their random keys; the `size` smallest keys of all of them are a uniform sample of the corpus
    (bottom-k sampling)."""

    size: int
    seed: int
    rate: float = 1.0
    parts: list[str] = field(default_factory=list)

    def rate_for(self, rows: int) -> float:
        return 1.0 if not rows else min(1.0, SAMPLE_OVERDRAW * self.size / rows)

    def threshold(self) -> float:
        """The largest key kept (only the keys are read here)."""
        keys = [storage.read_parquet(p, ["key"]).column("key").to_numpy() for p in self.parts]
        keys = np.concatenate(keys) if keys else np.zeros(0)
        return (
            float(np.partition(keys, self.size - 1)[self.size - 1])
            if len(keys) > self.size
            else 2.0
        )

    def batches(self) -> Iterator[tuple[list[str], list[str]]]:
        """(sources, targets) of the kept rows, part by part, for the vocabulary trainer."""
        limit = self.threshold()
        for path in self.parts:
            table = storage.read_parquet(path)
            table = table.filter(pc.less_equal(table.column("key"), limit))
            yield table.column("source").to_pylist(), table.column("target").to_pylist()

    def count(self) -> int:
        """Rows drawn (before keeping the `size` smallest keys)."""
        return sum(storage.parquet_rows(path) for path in self.parts)


def _classify_piece(item, pieces, name, columns, text_columns, work, keep, sample) -> dict:
    index = item["i"]
    piece: Piece = pieces[index]
    part = f"{index:06d}"
    read = PieceRead()
    counts, ok_parts, bad_parts, drawn = Counter(), [], [], []
    tgt_col = text_columns[1] if len(text_columns) > 1 else None
    for number, block in enumerate(read_piece(piece, columns, columns, read)):
        table = classify_block(block, text_columns[0], tgt_col)
        counts += count_status(table)
        ok, bad = split_ok(table)
        bad_parts.append(bad)
        if keep:
            ok_parts.append(ok)
        if sample is not None:
            size, rate, seed = sample
            drawn.append(sample_rows(ok, rate, size, [seed, index, number]))
            drawn = [smallest_keys(pa.concat_tables(drawn), size)]
    write_rejects(bad_parts, storage.join(work["rejects"], f"{part}.csv"))
    rows = sum(t.num_rows for t in ok_parts)
    out = storage.join(work["staging"], f"{part}.parquet")
    if rows:
        storage.write_parquet(pa.concat_tables(ok_parts), out)
    drawn_to = storage.join(work["sample"], f"{part}.parquet")
    if drawn and drawn[0].num_rows:
        storage.write_parquet(drawn[0], drawn_to)
    else:
        drawn = None
    result = {"counts": counts, "landed": read.landed, "part": out if rows else None, "rows": rows}
    return {"i": index, "result": json.dumps({**result, "sample": drawn_to if drawn else None})}


def _run(items: list[dict], fn, fn_kwargs: dict):
    """Run fn over items as Ray Data tasks (one item per task, a CPU each); yield results."""
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    for row in ds.map(
        _user_errors_returned, fn_kwargs={"fn": fn, **fn_kwargs}, num_cpus=1
    ).iter_rows():
        result = json.loads(row["result"])
        if "error" in result:  # a bad input found inside a task: the user's one-line error
            raise DataError(result["error"])
        yield row["i"], result


def _user_errors_returned(item, fn, **kwargs) -> dict:
    """fn(item), or the message of the UserError it raised: Ray Data wraps an exception raised
    in a map task in one that keeps only its text."""
    try:
        return fn(item, **kwargs)
    except UserError as exc:
        return {"i": item["i"], "result": json.dumps({"error": exc.message})}


def classify_split(
    path: str | ParallelFiles,
    name: str,
    text_columns: list[str],
    run_dir: str,
    *,
    keep: bool = True,
    sample: Sample | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> SplitData:
    """Pass 1 over a split (see the module docstring). A CSV file whose pieces disagree about
    where records start (a stray quote) is read again as one piece."""
    corpus = open_corpus(path, text_columns)
    if sample is not None:
        sample.rate = sample.rate_for(corpus.estimate_rows())
    pieces = plan(corpus, piece_size(corpus, piece_bytes, ray.cluster_resources().get("CPU", 1)))
    work = {
        "rejects": storage.join(run_dir, "rejects", name),
        "staging": storage.join(run_dir, "staging", name),
        "sample": storage.join(run_dir, "staging", "sample"),
    }
    kwargs = {
        "pieces": pieces, "name": name, "columns": corpus.columns, "text_columns": text_columns,
        "work": work, "keep": keep,
        "sample": None if sample is None else (sample.size, sample.rate, sample.seed),
    }  # fmt: skip
    results = dict(_run([{"i": i} for i in range(len(pieces))], _classify_piece, kwargs))
    redo = sorted({pieces[i].file for i, r in results.items() if not r["landed"]})
    for file in redo:
        mine = [i for i, p in enumerate(pieces) if p.file == file]
        for i in mine:
            result = results.pop(i)
            _forget(result["part"], result["sample"], storage.join(work["rejects"], f"{i:06d}.csv"))
        pieces[mine[0]] = pieces[mine[0]].whole()
        results.update(_run([{"i": mine[0]}], _classify_piece, kwargs))
    split = SplitData(name, str(path))
    for i in sorted(results):
        r = results[i]
        split.counts.update(r["counts"])
        if r["part"]:
            split.parts.append((r["part"], r["rows"]))
        if sample is not None and r["sample"]:
            sample.parts.append(r["sample"])
    if split.read == 0:
        raise DataError(f"{path}: the {name} corpus is empty (no rows under the header)")
    return split


def _forget(*paths: str | None) -> None:
    for path in paths:
        if path and storage.exists(path):
            storage.delete(path)


def _encode_part(item, parts, out_dir, rejects_dir, files, key, max_length, columns) -> dict:
    index = item["i"]
    path = parts[index]
    name = path.rsplit("/", 1)[-1].removesuffix(".parquet")
    table = encode_block(storage.read_parquet(path), files, key, max_length)
    ok, bad = split_ok(table)
    write_rejects([bad], storage.join(rejects_dir, f"{name}.too_long.csv"))
    out = storage.join(out_dir, f"{name}.parquet")
    if ok.num_rows:
        storage.write_parquet(ok.select(list(columns)), out)
    result = {"counts": count_status(table), "part": out if ok.num_rows else None}
    return {"i": index, "result": json.dumps({**result, "rows": ok.num_rows})}


def encode_split(
    split: SplitData, vocab: Vocabulary, max_length: int, run_dir: str, out_dir: str
) -> SplitData:
    """Pass 2: encode a classified split into out_dir; its staging parts are then deleted."""
    key, files = vocab_key(vocab)
    columns = ENCODED + (("target",) if split.name != "train" else ())
    kwargs = {
        "parts": [p for p, _ in split.parts], "out_dir": out_dir,
        "rejects_dir": storage.join(run_dir, "rejects", split.name),
        "files": files, "key": key, "max_length": max_length, "columns": columns,
    }  # fmt: skip
    out = SplitData(split.name, split.path, Counter(split.counts))
    out.counts[OK] = 0
    items = [{"i": i} for i in range(len(split.parts))]
    for _, r in sorted(_run(items, _encode_part, kwargs) if items else []):
        out.counts.update(r["counts"])
        if r["part"]:
            out.parts.append((r["part"], r["rows"]))
    for path, _ in split.parts:
        storage.delete(path)
    return out


@ray.remote
def _vocab_task(cfg: VocabConfig, sample: Sample, threads: int) -> dict[str, bytes]:
    return build_vocab(cfg, sample.batches(), num_threads=threads).to_files()


def build_vocab_on_cluster(cfg: VocabConfig, sample: Sample) -> Vocabulary:
    """The vocabulary trained once, in one Ray task that holds the CPUs of the largest node (the
    trainer's threads), streaming the sample's parts: the driver, often a small head node, holds
    neither the sample nor the trainer's memory."""
    cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
    threads = max(1, int(cpus))
    task = _vocab_task.options(num_cpus=threads)
    try:
        return Vocabulary.from_files(ray.get(task.remote(cfg, sample, threads)))
    except ray.exceptions.RayTaskError as exc:
        error = user_error_of(exc)  # e.g. a vocab_size the sample cannot fill
        if error is None:
            raise
        raise error from None


def sample_for(max_sentences: int, seed: int) -> Sample:
    """The vocabulary's sample: max_sentences sentences (both sides count)."""
    return Sample(max(1, max_sentences // 2), seed)


def timed(label: str, started: float) -> float:
    now = time.perf_counter()
    print(f"[data] {label} in {now - started:.1f}s", flush=True)
    return now


def read_rejects(run_dir: str, split: str) -> list[dict]:
    """Every rejected row of a split (the CSV parts under rejects/<split>/), as dicts."""
    directory = storage.join(run_dir, "rejects", split)
    rows: list[dict] = []
    for name in sorted(storage.list_dir(directory)):
        if name.endswith(".csv"):
            text = storage.read_text(storage.join(directory, name))
            rows += list(csv.DictReader(io.StringIO(text, newline="")))
    return rows


def read_parts(parts: list[tuple[str, int]], columns: list[str] | None = None) -> pa.Table | None:
    """A split's Parquet parts as one table (for tests and small splits)."""
    tables = [storage.read_parquet(path, columns) for path, _ in parts]
    return pa.concat_tables(tables) if tables else None
