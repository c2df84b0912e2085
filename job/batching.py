"""Length-bucketed, token-budget batches from encoded Arrow data (no Ray, no tokenisation here).

A chunk of rows is sorted by length (ties broken at random), cut into batches whose padded size
(rows x (longest source + longest target)) stays within the token budget, and the batch order is
shuffled. Padding stays small and every batch costs about the same. A batch already half full
also ends where the source length changes, so most batches have one source length and the
encoder runs without packing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from job.vocab import BOS, EOS, PAD


@dataclass
class Batch:
    src: torch.Tensor       # (B, S) source ids + EOS, PAD-padded
    src_len: torch.Tensor   # (B,)
    tgt_in: torch.Tensor    # (B, T) BOS + target ids
    tgt_out: torch.Tensor   # (B, T) target ids + EOS, PAD-padded
    src_tokens: int         # real tokens (EOS included), no padding
    tgt_tokens: int

    def to(self, device) -> "Batch":
        if str(device) == "cpu":
            return self
        return Batch(self.src.to(device, non_blocking=True), self.src_len, self.tgt_in.to(device, non_blocking=True),
                     self.tgt_out.to(device, non_blocking=True), self.src_tokens, self.tgt_tokens)


def bucket(src_lens: np.ndarray, tgt_lens: np.ndarray, batch_tokens: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each batch; lengths include the EOS/BOS token each side gets."""
    n = len(src_lens)
    if n == 0:
        return []
    order = np.lexsort((rng.random(n), tgt_lens, src_lens))
    batches, start = [], 0
    max_s = max_t = 0
    for pos in range(n):
        i = order[pos]
        s, t = max(max_s, src_lens[i]), max(max_t, tgt_lens[i])
        full = (pos - start + 1) * (s + t) > batch_tokens
        # A batch that is at least half full ends where the source length changes: a batch of
        # equal source lengths runs the encoder without packing (about 1.7x faster on CPU).
        new_length = s > max_s and (pos - start) * (max_s + max_t) * 2 >= batch_tokens
        if pos > start and (full or new_length):
            batches.append(order[start:pos])
            start, s, t = pos, src_lens[i], tgt_lens[i]
        max_s, max_t = s, t
    batches.append(order[start:])
    rng.shuffle(batches)
    return batches


def pad(values: np.ndarray, offsets: np.ndarray, idx: np.ndarray, bos: bool, eos: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows `idx` of a flat (values, offsets) list column, as a PAD-padded (len(idx), L) array."""
    starts, ends = offsets[idx], offsets[idx + 1]
    lens = ends - starts
    extra = int(bos) + int(eos)
    out = np.full((len(idx), int(lens.max()) + extra), PAD, dtype=np.int64)
    if bos:
        out[:, 0] = BOS
    body = np.concatenate([values[a:b] for a, b in zip(starts, ends)]) if len(idx) else values[:0]
    cols = np.arange(out.shape[1] - extra)
    mask = cols[None, :] < lens[:, None]
    out[:, int(bos):out.shape[1] - int(eos)][mask] = body
    if eos:
        out[np.arange(len(idx)), lens + int(bos)] = EOS
    return out, lens + extra


def make_batch(src_vals, src_offs, tgt_vals, tgt_offs, idx: np.ndarray) -> Batch:
    src, src_len = pad(src_vals, src_offs, idx, bos=False, eos=True)
    tgt_in, _ = pad(tgt_vals, tgt_offs, idx, bos=True, eos=False)
    tgt_out, tgt_len = pad(tgt_vals, tgt_offs, idx, bos=False, eos=True)
    return Batch(torch.from_numpy(src), torch.from_numpy(src_len), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out),
                 int(src_len.sum()), int(tgt_len.sum()))


def chunk_batches(src_vals, src_offs, tgt_vals, tgt_offs, batch_tokens: int, rng) -> Iterator[Batch]:
    src_lens = np.diff(src_offs) + 1
    tgt_lens = np.diff(tgt_offs) + 1
    for idx in bucket(src_lens, tgt_lens, batch_tokens, rng):
        yield make_batch(src_vals, src_offs, tgt_vals, tgt_offs, idx)
