"""What each DDP rank trains and validates on: its slice of each epoch of the prepared data
(job.prepare's Parquet parts, streamed), cut into token-budget batches, and its share of the
validation set. The batchers take any object with Ray Data's `iter_batches` (the readers here, or
a Ray Dataset in a test)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from job import storage
from job.batching import Batch, chunk_batches, list_column
from job.config import Config

TRAIN_COLUMNS = ("src_ids", "tgt_ids")


def _rebatch(tables: Iterator[pa.Table], batch_size: int) -> Iterator[pa.Table]:
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


def _prefetched(paths: list, load) -> Iterator:
    """load(path) for each path, the next one read by a thread while the caller works."""
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(load, paths[0]) if paths else None
        for i in range(len(paths)):
            current = ahead.result()
            ahead = pool.submit(load, paths[i + 1]) if i + 1 < len(paths) else None
            yield current


class EpochSlice:
    """This rank's rows of one epoch of the prepared training data. The epoch's order is a
    function of (seed, epoch) alone: the parts shuffled, each part's rows shuffled, the whole
    cut into `world` equal contiguous slices (the N mod world rows at the end wait for another
    epoch). Any worker count, a restart or a resume reproduces the same epoch."""

    def __init__(self, parts: list[tuple[str, int]], seed: int, epoch: int, rank: int, world: int):
        rng = np.random.default_rng([seed, 7_777, epoch])
        self.order = [(parts[i][0], parts[i][1], int(i)) for i in rng.permutation(len(parts))]
        self.seed, self.epoch = seed, epoch
        per_rank = sum(rows for _, rows, _ in self.order) // world
        self.lo, self.hi = rank * per_rank, (rank + 1) * per_rank

    def _pieces(self) -> list[tuple[str, int, int, int]]:
        """(path, part number, first row, end row) of the parts this slice reads."""
        out, start = [], 0
        for path, rows, number in self.order:
            lo, hi = max(self.lo, start), min(self.hi, start + rows)
            if lo < hi:
                out.append((path, number, lo - start, hi - start))
            start += rows
        return out

    def _load(self, piece) -> pa.Table:
        path, number, lo, hi = piece
        table = storage.read_parquet(path, TRAIN_COLUMNS)
        rows = np.random.default_rng([self.seed, 7_778, self.epoch, number]).permutation(
            table.num_rows
        )
        return table.take(rows[lo:hi])

    def iter_batches(self, *, batch_size: int, **_) -> Iterator[pa.Table]:
        return _rebatch(_prefetched(self._pieces(), self._load), batch_size)


class PartsReader:
    """Every row of a split's prepared parts, in manifest order (the validation set)."""

    def __init__(self, parts: list[tuple[str, int]], columns=(*TRAIN_COLUMNS, "target")):
        self.paths, self.columns = [p for p, _ in parts], columns

    def iter_batches(self, *, batch_size: int, **_) -> Iterator[pa.Table]:
        load = functools.partial(storage.read_parquet, columns=self.columns)
        return _rebatch(_prefetched(self.paths, load), batch_size)


class EpochBatches:
    """Token-budget batches over this worker's rows for one epoch, bucketed and shuffled chunk by
    chunk, in cost-matched order: every rank's i-th batch of a chunk comes from the same cost
    quantile, so DDP ranks rarely wait on each other (batching.cost_matched_order)."""

    def __init__(self, shard, cfg: Config, rank: int, epoch: int):
        self.tables = iter(
            shard.iter_batches(
                batch_format="pyarrow", batch_size=cfg.train.shuffle_chunk_rows, prefetch_batches=1
            )
        )
        self.batches = iter(())
        self.cfg, self.epoch, self.chunk = cfg, epoch, 0
        self.rng = np.random.default_rng([cfg.train.seed, rank, epoch])

    def next(self) -> Batch | None:
        while True:
            batch = next(self.batches, None)
            if batch is not None:
                return batch
            table = next(self.tables, None)
            if table is None:
                return None
            sv, so = list_column(table.column("src_ids"))
            tv, to = list_column(table.column("tgt_ids"))
            # Seeded alike on every rank: the ranks walk their cost strata in one order.
            shared = np.random.default_rng([self.cfg.train.seed, 1_000_003, self.epoch, self.chunk])
            self.chunk += 1
            self.batches = chunk_batches(
                sv, so, tv, to, self.cfg.train.batch_tokens, self.rng, shared
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
