"""Decoding: batched greedy search, and decoding whole lists of sentences in length-sorted batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from job.batching import pad
from job.model import Seq2Seq
from job.vocab import BOS, EOS, PAD


@torch.no_grad()
def greedy(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor):
    """Batched greedy decoding.

    src: (B, S) ids ending in EOS, PAD-padded; src_len: (B,); max_len: (B,) longest output per
    sentence, EOS excluded. Returns tokens (B, T) (EOS removed, PAD after the end), scores (B,)
    (summed log-probabilities including the EOS step) and attention (B, T, S) or None.
    """
    enc_out, state, keys, src_mask = model.encode(src, src_len)
    batch = src.size(0)
    inp = torch.full((batch, 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, device=src.device)
    max_len = max_len.to(src.device)
    tokens, attn = [], []
    for t in range(int(max_len.max()) + 1):
        feat, state, weights = model.decoder(inp, state, enc_out, keys, src_mask)
        logp = torch.log_softmax(model.decoder.out(feat[:, 0]).float(), dim=-1)
        logp[:, PAD] = float("-inf")  # never emitted mid-sentence
        logp[:, BOS] = float("-inf")
        # A sentence that has produced max_len tokens must end now.
        forced = (max_len <= t) & ~done
        if bool(forced.any()):
            eos_lp = logp[forced, EOS]
            logp[forced] = float("-inf")
            logp[forced, EOS] = eos_lp
        best_lp, best = logp.max(dim=-1)
        scores += torch.where(done, torch.zeros_like(best_lp), best_lp)
        best = torch.where(done, torch.full_like(best, PAD), best)
        done = done | (best == EOS)
        tokens.append(torch.where(best == EOS, torch.full_like(best, PAD), best))
        if weights is not None:
            attn.append(weights[:, 0])
        if bool(done.all()):
            break
        inp = best.unsqueeze(1)
    return torch.stack(tokens, dim=1), scores, (torch.stack(attn, dim=1) if attn else None)


@dataclass
class Decoded:
    ids: list[list[int]]      # output token ids per sentence, EOS and padding removed
    scores: list[float]       # log-probability of each output
    truncated: list[bool]     # source was cut to max_src_len tokens before decoding


def decode_ids(model: Seq2Seq, sources: list[list[int]], *, batch_size: int, max_src_len: int,
               max_length_ratio: float, device: torch.device | str = "cpu") -> Decoded:
    """Greedy-decode source id lists (no EOS) in length-sorted batches; results in input order."""
    n = len(sources)
    ids: list[list[int]] = [[] for _ in range(n)]
    scores = [0.0] * n
    truncated = [len(s) + 1 > max_src_len for s in sources]
    clipped = [s[: max_src_len - 1] for s in sources]
    lengths = np.array([len(s) for s in clipped], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([np.asarray(s, dtype=np.int64) for s in clipped]) if n else np.zeros(0, np.int64)
    order = np.argsort(lengths, kind="stable")
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            src, src_len = pad(values, offsets, idx, bos=False, eos=True)
            src_t = torch.from_numpy(src).to(device)
            src_len_t = torch.from_numpy(src_len)
            max_len = (src_len_t.double() * max_length_ratio).long() + 10
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=src_t.is_cuda):
                out, sc, _ = greedy(model, src_t, src_len_t, max_len)
            out = out.cpu().numpy()
            sc = sc.cpu().tolist()
            for row, i in enumerate(idx):
                toks = out[row]
                ids[i] = toks[toks != PAD].tolist()
                scores[i] = sc[row]
    finally:
        model.train(was_training)
    return Decoded(ids, scores, truncated)
