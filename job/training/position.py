"""Where training is within an epoch, exactly: so that a worker-group restart, a `--resume` or
an elastic resize continues the epoch where it stopped, neither redoing nor skipping a row, with
any worker count.

An epoch's order of the N prepared training rows is a function of (train.seed, epoch) alone
(EpochOrder): the parts shuffled, each part's rows shuffled; row g of the epoch is its position.
The rows not yet trained this epoch (all N at its start) are cut into one contiguous,
near-equal share per rank (`share`). A rank trains its share chunk by chunk (the feeder buckets
a chunk's rows into batches), so what it has done is a prefix of its share (the chunks it
finished) plus the rows of the batches it trained from the current chunk (EpochProgress).
Every checkpoint gathers that from the ranks into one bitmap of the epoch's done positions
(`position.npy` in the checkpoint, N/8 bytes); a restart starts from the rows it does not mark.

Each trained row also adds a hash of its identity (part, row) to a digest that the checkpoint
carries on, so the epoch-end row of metrics.jsonl says how many rows the epoch trained and which
(`epoch_rows`, `epoch_digest`): equal to `digest_of_parts` when every row was trained once.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from job import storage
from job.training.feeder import TRAIN_COLUMNS, prefetched, rebatch

POSITION_FILE = "position.npy"
_MASK = (1 << 64) - 1


def row_ids(part_number: int, rows: np.ndarray) -> np.ndarray:
    """A row's identity across epochs: its part's number (manifest order) and its row there."""
    return (np.uint64(part_number) << np.uint64(32)) | rows.astype(np.uint64)


def row_hash(ids: np.ndarray) -> np.ndarray:
    """splitmix64 of each id: a well-mixed 64-bit value per row (uint64 arithmetic wraps)."""
    z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def digest(ids: np.ndarray) -> int:
    """The sum of the rows' hashes, mod 2**64: the same for the same rows in any order or split."""
    return int(row_hash(ids).sum(dtype=np.uint64)) if len(ids) else 0


def digest_of_parts(parts: list[tuple[str, int]]) -> int:
    """The digest of every row of the prepared parts, each once."""
    total = 0
    for number, (_, rows) in enumerate(parts):
        total += digest(row_ids(number, np.arange(rows)))
    return total & _MASK


class EpochOrder:
    """The order of every training row in one epoch, from (seed, epoch) alone."""

    def __init__(self, parts: list[tuple[str, int]], seed: int, epoch: int):
        self.parts, self.seed, self.epoch = parts, seed, epoch
        self.perm = np.random.default_rng([seed, 7_777, epoch]).permutation(len(parts))
        rows = np.array([parts[i][1] for i in self.perm], dtype=np.int64)
        self.starts = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(rows, out=self.starts[1:])
        self.total = int(self.starts[-1])

    def share(self, rank: int, world: int, remaining: np.ndarray | None = None) -> np.ndarray:
        """The positions rank trains: its contiguous, near-equal piece (sizes differ by at most
        one row) of `remaining`, the positions not yet done (all of them when None)."""
        if remaining is None:
            lo, hi = rank * self.total // world, (rank + 1) * self.total // world
            return np.arange(lo, hi, dtype=np.int64)
        n = len(remaining)
        return remaining[rank * n // world : (rank + 1) * n // world]

    def _load(self, piece: tuple[int, np.ndarray, np.ndarray]) -> pa.Table:
        index, local, positions = piece
        number = int(self.perm[index])
        table = storage.read_parquet(self.parts[number][0], TRAIN_COLUMNS)
        rng = np.random.default_rng([self.seed, 7_778, self.epoch, number])
        rows = rng.permutation(table.num_rows)[local]
        table = table.take(rows)
        table = table.append_column("position", pa.array(positions, pa.int64()))
        return table.append_column("row_id", pa.array(row_ids(number, rows), pa.uint64()))

    def pieces(self, positions: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(index in the epoch's part order, rows within that part, their positions) per part
        that `positions` (ascending) touch."""
        which = np.searchsorted(self.starts, positions, side="right") - 1
        bounds = [0, *(np.flatnonzero(np.diff(which)) + 1), len(positions)]
        out = []
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                index = int(which[lo])
                g = positions[lo:hi]
                out.append((index, g - self.starts[index], g))
        return out


class EpochShare:
    """A rank's rows of one epoch (positions of an EpochOrder), read part by part (the next part
    read by a thread meanwhile), in position order, with their `position` and `row_id`; an
    object with Ray Data's `iter_batches` for the feeder."""

    def __init__(self, order: EpochOrder, positions: np.ndarray):
        self.order, self.positions = order, positions

    def iter_batches(self, *, batch_size: int, **_) -> Iterator[pa.Table]:
        pieces = self.order.pieces(self.positions)
        return rebatch(prefetched(pieces, self.order._load), batch_size)


class EpochProgress:
    """What this rank has trained of its share this epoch (since this process started it), and
    the epoch's state restored from a checkpoint (`done_before`, `rows_before`, `digest_before`)."""

    def __init__(self, order: EpochOrder, rank: int, world: int, restored: dict | None = None):
        restored = restored or {}
        self.order, self.rank, self.world = order, rank, world
        self.done_before: np.ndarray | None = restored.get("done")
        self.rows_before = int(restored.get("rows", 0))
        self.digest_before = int(restored.get("digest", 0))
        # the positions not yet done, computed once (N bits scanned); rank 0 keeps them to place
        # every rank's share in combine()
        remaining = None if self.done_before is None else np.flatnonzero(~self.done_before)
        self.positions = order.share(rank, world, remaining)
        self.remaining = remaining if rank == 0 else None
        self.finished = 0  # positions[:finished]: the chunks this rank has finished
        self.chunk_rows = 0  # rows of the current chunk
        self.partial: list[np.ndarray] = []  # positions trained from the current chunk
        self.rows = 0
        self.digest = 0

    def start_chunk(self, rows: int) -> None:
        """The feeder moved to the next chunk of `rows` rows: the previous one is finished."""
        self.finished += self.chunk_rows
        self.chunk_rows, self.partial = rows, []

    def trained(self, positions: np.ndarray, ids: np.ndarray) -> None:
        self.partial.append(positions)
        self.rows += len(ids)
        self.digest = (self.digest + digest(ids)) & _MASK

    def local(self) -> dict:
        """This rank's part of a checkpoint's position (gathered on rank 0)."""
        partial = np.concatenate(self.partial) if self.partial else np.zeros(0, np.int64)
        return {"finished": self.finished, "partial": partial, "rows": self.rows,
                "digest": self.digest}  # fmt: skip

    def combine(self, locals_: list[dict]) -> tuple[np.ndarray, int, int]:
        """Rank 0: the epoch's done bitmap, rows and digest from every rank's `local()`."""
        done = np.zeros(self.order.total, dtype=bool)
        if self.done_before is not None:
            done |= self.done_before
        for rank, loc in enumerate(locals_):
            done[self.order.share(rank, self.world, self.remaining)[: loc["finished"]]] = True
            done[loc["partial"]] = True
        return (done, *self.totals([(loc["rows"], loc["digest"]) for loc in locals_]))

    def totals(self, counts: list[tuple[int, int]]) -> tuple[int, int]:
        """The epoch's rows and digest so far, from every rank's (rows, digest) since this
        process started the epoch, and what the checkpoint restored."""
        rows = self.rows_before + sum(r for r, _ in counts)
        return rows, (self.digest_before + sum(d for _, d in counts)) & _MASK


def save_done(directory: str, done: np.ndarray) -> None:
    np.save(os.path.join(directory, POSITION_FILE), np.packbits(done))


def load_done(directory: str, total: int) -> np.ndarray:
    packed = np.load(os.path.join(directory, POSITION_FILE))
    return np.unpackbits(packed, count=total).astype(bool)
