"""What each DDP rank trains and validates on: its epoch's batches from its Ray Data shard, and
its share of the validation set. Works on any object with Ray Data's `iter_batches` (a
DataIterator inside Ray Train, a Dataset in a test)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from job.batching import Batch, chunk_batches, list_column
from job.config import Config


class EpochBatches:
    """Token-budget batches over this worker's shard for one epoch, bucketed and shuffled chunk by
    chunk, in cost-matched order: every rank's i-th batch of a chunk comes from the same cost
    quantile, so DDP ranks rarely wait on each other (batching.cost_matched_order).
    `drain()` reads the rest of the shard without training on it, so that Ray Data's streaming
    split sees every worker finish the epoch before the next one starts."""

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

    def drain(self) -> None:
        for _ in self.tables:
            pass


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
