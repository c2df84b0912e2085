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
        _forbid(logp, max_len, t)
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


def _length_penalty(length: torch.Tensor | int, alpha: float):
    """GNMT length penalty ((5 + len) / 6) ** alpha; alpha 0 ranks by raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


def _forbid(logp: torch.Tensor, max_len: torch.Tensor, t: int) -> None:
    """In place: never PAD/BOS; EOS only, once a sentence has produced max_len tokens."""
    logp[:, PAD] = float("-inf")
    logp[:, BOS] = float("-inf")
    forced = max_len <= t
    if bool(forced.any()):
        eos_lp = logp[forced, EOS]
        logp[forced] = float("-inf")
        logp[forced, EOS] = eos_lp


@torch.no_grad()
def beam_search(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor,
                beam: int, length_penalty: float = 1.0):
    """Batched beam search: every sentence of the batch is decoded together, `beam` hypotheses each.

    At each step the 2*beam best extensions per sentence are taken; those ending in EOS among the
    best `beam` are set aside as finished (scored with the length penalty), the best `beam` others
    continue. A sentence is done once `beam` hypotheses have finished (max_len forces EOS).
    Returns tokens (B, T) (EOS removed, PAD after the end) and scores (B,): the summed
    log-probability (EOS included) of the best finished hypothesis by length-normalised score.
    """
    B, K = src.size(0), beam
    device = src.device
    enc_out, (h, c), keys, src_mask = model.encode(src, src_len)
    grow = lambda x, dim=0: x.repeat_interleave(K, dim)  # noqa: E731  (B, ...) -> (B*K, ...)
    enc_out, src_mask = grow(enc_out), grow(src_mask)
    keys = grow(keys) if keys is not None else None
    state = (grow(h, 1), grow(c, 1))
    max_len = max_len.to(device)
    max_len_k = grow(max_len)

    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per sentence at the start
    inp = torch.full((B * K, 1), BOS, dtype=torch.long, device=device)
    best_norm = torch.full((B,), float("-inf"), device=device)
    best_raw = torch.zeros(B, device=device)
    best_step = torch.zeros(B, dtype=torch.long, device=device)
    best_beam = torch.zeros(B, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.long, device=device)
    tokens_hist, parent_hist = [], []
    rows = torch.arange(B, device=device)
    for t in range(int(max_len.max()) + 1):
        feat, state, _ = model.decoder(inp, state, enc_out, keys, src_mask)
        logp = torch.log_softmax(model.decoder.out(feat[:, 0]).float(), dim=-1)  # (B*K, V)
        _forbid(logp, max_len_k, t)
        V = logp.size(-1)
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)
        top_val, top_idx = cand.topk(2 * K, dim=-1)  # (B, 2K)
        top_beam, top_tok = top_idx // V, top_idx % V
        is_eos = (top_tok == EOS) & torch.isfinite(top_val)
        done = finished >= K

        # Finished hypotheses: EOS among the best K candidates of sentences not yet done.
        eos_first = is_eos[:, :K] & ~done.unsqueeze(1)
        norm = torch.where(eos_first, top_val[:, :K] / _length_penalty(t + 1, length_penalty), float("-inf"))
        cand_best, cand_pos = norm.max(dim=-1)
        better = cand_best > best_norm
        best_norm = torch.where(better, cand_best, best_norm)
        best_raw = torch.where(better, top_val[rows, cand_pos], best_raw)
        best_beam = torch.where(better, top_beam[rows, cand_pos], best_beam)
        best_step = torch.where(better, torch.full_like(best_step, t), best_step)
        finished = finished + eos_first.sum(-1)

        # Live hypotheses: the best K candidates that did not end.
        positions = torch.arange(2 * K, device=device).expand(B, -1)
        order = torch.where(is_eos, positions + 2 * K, positions).argsort(dim=-1)[:, :K]
        new_scores = top_val.gather(1, order)
        new_scores = torch.where(is_eos.gather(1, order), float("-inf"), new_scores)
        parents = top_beam.gather(1, order)
        new_tok = top_tok.gather(1, order)
        tokens_hist.append(new_tok)
        parent_hist.append(parents)
        scores = new_scores
        if bool((finished >= K).all()):
            break
        flat_parent = (parents + rows.unsqueeze(1) * K).view(-1)
        state = (state[0][:, flat_parent], state[1][:, flat_parent])
        inp = new_tok.view(B * K, 1)

    # Backtrack the best hypothesis of each sentence: it ended with EOS at best_step, extending
    # beam best_beam of the previous step.
    length = int(best_step.max()) if B else 0
    out = torch.full((B, max(length, 1)), PAD, dtype=torch.long, device=device)
    beam_at = best_beam.clone()
    for step in range(length - 1, -1, -1):
        active = step < best_step
        tok = tokens_hist[step][rows, beam_at]
        out[:, step] = torch.where(active, tok, out[:, step])
        beam_at = torch.where(active, parent_hist[step][rows, beam_at], beam_at)
    return out, best_raw


@dataclass
class Decoded:
    ids: list[list[int]]      # output token ids per sentence, EOS and padding removed
    scores: list[float]       # log-probability of each output
    truncated: list[bool]     # source was cut to max_src_len tokens before decoding


def decode_ids(model: Seq2Seq, sources: list[list[int]], *, batch_size: int, max_src_len: int,
               max_length_ratio: float, device: torch.device | str = "cpu", beam: int = 1,
               length_penalty: float = 1.0) -> Decoded:
    """Decode source id lists (no EOS) in length-sorted batches (greedy when beam is 1, else beam
    search); results in input order."""
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
                if beam > 1:
                    out, sc = beam_search(model, src_t, src_len_t, max_len, beam, length_penalty)
                else:
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
