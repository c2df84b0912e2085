"""Forced decoding: the model's log-probability of given target ids, one teacher-forced decoder
pass per batch (no loop over rows or steps), and where each target token attends most.

It serves `score` (given source-target pairs), the alignments of translations, and is the
check that a translation's reported score is its log-probability: decoding and scoring run the
same layers on the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from job.errors import ConfigError
from job.model.batching import bucket, flatten, pad
from job.model.device import autocast
from job.model.seq2seq import Seq2Seq

LOGIT_ROWS = 2048  # target positions projected to the vocabulary at a time


@dataclass
class Forced:
    scores: list[float]  # summed log-probability of each target, EOS included
    tokens: list[int]  # tokens scored per row: target + EOS
    truncated: list[bool]  # source cut to max_src_len tokens first (as decoding does)
    alignments: list[list[int]] | None  # per target token (EOS excluded): the source position
    # it attends to most; None without alignments=True


@torch.inference_mode()
def force_decode(
    model: Seq2Seq,
    sources: list[list[int]],
    targets: list[list[int]],
    *,
    max_src_len: int,
    batch_tokens: int = 8000,
    device: torch.device | str = "cpu",
    alignments: bool = False,
) -> Forced:
    """Score target id lists (no EOS) given source id lists (no EOS); results in input order.

    Batches hold about `batch_tokens` padded tokens (sources + targets), length-sorted.
    """
    n = len(sources)
    truncated = [len(s) + 1 > max_src_len for s in sources]
    sv, so = flatten([s[: max_src_len - 1] for s in sources])
    tv, to = flatten(targets)
    src_lens, tgt_lens = np.diff(so) + 1, np.diff(to) + 1
    scores, aligned = [0.0] * n, [[] for _ in range(n)] if alignments else None
    was_training = model.training
    model.eval()
    try:
        for idx in bucket(src_lens, tgt_lens, batch_tokens, np.random.default_rng(0)):
            src, src_len = pad(sv, so, idx, bos=False, eos=True)
            tgt_in, _ = pad(tv, to, idx, bos=True, eos=False)
            tgt_out, _ = pad(tv, to, idx, bos=False, eos=True)
            src_t, tgt_in_t = torch.from_numpy(src).to(device), torch.from_numpy(tgt_in).to(device)
            tgt_out_t = torch.from_numpy(tgt_out).to(device)
            with autocast(src_t.device):
                sums, where = _batch(
                    model, src_t, torch.from_numpy(src_len), tgt_in_t, tgt_out_t, alignments
                )
            for row, i in enumerate(idx):
                scores[i] = float(sums[row])
                if aligned is not None:
                    aligned[i] = where[row, : tgt_lens[i] - 1].tolist()
    finally:
        model.train(was_training)
    return Forced(scores, tgt_lens.tolist(), truncated, aligned)


def _batch(model, src, src_len, tgt_in, tgt_out, alignments: bool):
    """Summed log-probabilities (B,) of tgt_out, and the attention argmax (B, T) or None."""
    enc_out, state, keys, src_mask = model.encode(src, src_len)
    feats, _, weights = model.decoder(tgt_in, state, enc_out, keys, src_mask)
    real = tgt_out != 0  # PAD
    rows = torch.arange(src.size(0), device=src.device).unsqueeze(1).expand_as(tgt_out)[real]
    x, target = feats[real], tgt_out[real]
    picked = torch.empty(x.size(0), device=src.device)
    for start in range(0, x.size(0), LOGIT_ROWS):
        chunk = slice(start, start + LOGIT_ROWS)
        z = model.decoder.out(x[chunk]).float()
        picked[chunk] = z.gather(1, target[chunk].unsqueeze(1)).squeeze(1) - z.logsumexp(dim=-1)
    sums = torch.zeros(src.size(0), device=src.device).index_add_(0, rows, picked)
    where = None
    if alignments:
        if weights is None:
            raise ConfigError("alignments need a model with attention (model.attention: luong)")
        where = weights.argmax(dim=-1).cpu()
    return sums.cpu(), where
