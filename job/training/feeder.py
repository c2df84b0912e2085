"""What each DDP rank trains and validates on: its share of each epoch of the prepared data
(job.corpus.prepare's Parquet parts, streamed; which rows, job.training.position), cut into
token-budget batches, and its share of the validation set. The batchers take any object with Ray
Data's `iter_batches` (the readers here and in job.training.position, or a Ray Dataset in a
test)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from job import storage
from job.config import Config
from job.model.batching import Batch, chunk_order, list_column, make_batch

TRAIN_COLUMNS = ("src_ids", "tgt_ids")


def rebatch(tables: Iterator[pa.Table], batch_size: int) -> Iterator[pa.Table]:
    pending, rows = [], 0
    for table in tables:
        while table.num_rows:
            take = min(batch_size - rows, table.num_rows)
            pending.append(table.slice(0, take))
            rows, table = rows + take, table.slice(take)
            if rows == batch_size:
                yield pa.concat_tables(pending)
                pending, rows = [], 0
    if rows:
        yield pa.concat_tables(pending)


def prefetched(paths: list, load) -> Iterator:
    """load(path) for each path, the next one read by a thread while the caller works."""
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(load, paths[0]) if paths else None
        for i in range(len(paths)):
            current = ahead.result()
            ahead = pool.submit(load, paths[i + 1]) if i + 1 < len(paths) else None
            yield current


class PartsReader:
    """Every row of a split's prepared parts, in manifest order (the validation set)."""

    def __init__(self, parts: list[tuple[str, int]], columns=(*TRAIN_COLUMNS, "target")):
        self.paths, self.columns = [p for p, _ in parts], columns

    def iter_batches(self, *, batch_size: int, **_) -> Iterator[pa.Table]:
        load = functools.partial(storage.read_parquet, columns=self.columns)
        return rebatch(prefetched(self.paths, load), batch_size)


@dataclass
class TrainBatch:
    """A training batch and, when the rows came from job.training.position's EpochShare, their epoch
    positions and row ids (what the checkpoint's position records)."""

    batch: Batch
    positions: np.ndarray | None = None
    ids: np.ndarray | None = None


class EpochBatches:
    """Token-budget batches over this worker's rows for one epoch, bucketed and shuffled chunk by
    chunk, in cost-matched order: every rank's i-th batch of a chunk comes from the same cost
    quantile, so DDP ranks rarely wait on each other (batching.cost_matched_order).
    `on_chunk(rows)` is called when a new chunk of `rows` rows is read: every batch of the
    previous one has been handed out."""

    def __init__(self, shard, cfg: Config, rank: int, epoch: int, on_chunk=None):
        self.tables = iter(
            shard.iter_batches(
                batch_format="pyarrow", batch_size=cfg.train.shuffle_chunk_rows, prefetch_batches=1
            )
        )
        self.batches: Iterator[TrainBatch] = iter(())
        self.cfg, self.epoch, self.chunk, self.on_chunk = cfg, epoch, 0, on_chunk
        self.rng = np.random.default_rng([cfg.train.seed, rank, epoch])

    def next(self) -> TrainBatch | None:
        while True:
            item = next(self.batches, None)
            if item is not None:
                return item
            table = next(self.tables, None)
            if table is None:
                return None
            if self.on_chunk is not None:
                self.on_chunk(table.num_rows)
            self.batches = self._chunk(table)

    def _chunk(self, table: pa.Table) -> Iterator[TrainBatch]:
        sv, so = list_column(table.column("src_ids"))
        tv, to = list_column(table.column("tgt_ids"))
        names = table.column_names
        positions = table.column("position").to_numpy() if "position" in names else None
        ids = table.column("row_id").to_numpy() if "row_id" in names else None
        # Seeded alike on every rank: the ranks walk their cost strata in one order.
        shared = np.random.default_rng([self.cfg.train.seed, 1_000_003, self.epoch, self.chunk])
        self.chunk += 1
        for idx in chunk_order(so, to, self.cfg.train.batch_tokens, self.rng, shared):
            yield TrainBatch(
                make_batch(sv, so, tv, to, idx),
                None if positions is None else positions[idx],
                None if ids is None else ids[idx],
            )


@dataclass
class ValidSet:
    """This worker's share of the validation set (every row is used, none dropped)."""

    src_vals: np.ndarray
    src_offs: np.ndarray
    tgt_vals: np.ndarray
    tgt_offs: np.ndarray
    index: np.ndarray  # global row index of each local row
    references: list[str]

    @property
    def src_lists(self) -> list[list[int]]:
        v, o = self.src_vals, self.src_offs
        return [v[o[i] : o[i + 1]].tolist() for i in range(len(o) - 1)]


def load_valid_share(dataset, rank: int, world: int) -> ValidSet:
    """Rows rank, rank + world, ... of the (unsplit) validation dataset: columns src_ids,
    tgt_ids and target (the reference text)."""
    src, tgt, ref, index, seen = [], [], [], [], 0
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=4096):
        n = table.num_rows
        rows = np.arange(seen, seen + n)
        sel = np.nonzero(rows % world == rank)[0]
        if len(sel):
            t = table.take(sel)
            src.append(t.column("src_ids"))
            tgt.append(t.column("tgt_ids"))
            ref += t.column("target").to_pylist()
            index.append(rows[sel])
        seen += n
    if not src:
        empty = np.zeros(0, np.int64)
        return ValidSet(empty, np.zeros(1, np.int64), empty, np.zeros(1, np.int64), empty, [])
    sv, so = list_column(pa.chunked_array([c for col in src for c in col.chunks]))
    tv, to = list_column(pa.chunked_array([c for col in tgt for c in col.chunks]))
    return ValidSet(sv, so, tv, to, np.concatenate(index), ref)
