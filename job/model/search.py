"""Decoding: batched greedy and beam search, and decoding whole lists of sentences in
length-sorted batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from job.corpus.vocab import BOS, EOS, PAD
from job.model.batching import flatten, pad
from job.model.device import autocast
from job.model.sampling import Sampling
from job.model.seq2seq import Seq2Seq


@torch.inference_mode()
def greedy(
    model: Seq2Seq,
    src: torch.Tensor,
    src_len: torch.Tensor,
    max_len: torch.Tensor,
    sampling: Sampling | None = None,
    uniforms: torch.Tensor | None = None,
):
    """Batched greedy decoding, or sampling; sentences that finished leave the batch, so a step
    costs only what is still being decoded.

    src: (B, S) ids ending in EOS, PAD-padded; src_len: (B,); max_len: (B,) longest output per
    sentence, EOS excluded. With `sampling`, each step's token is drawn (job.model.sampling) using
    uniforms (B, max_len.max() + 1), one row per sentence. Returns tokens (B, T) (EOS removed,
    PAD after the end), scores (B,) (summed log-probabilities of the chosen tokens under the
    model, EOS step included) and attention (B, T, S) or None.
    """
    enc_out, state, keys, src_mask = model.encode(src, src_len)
    batch, device = src.size(0), src.device
    alive = torch.arange(batch, device=device)  # sentence of each row still in the batch
    live = torch.ones(batch, dtype=torch.bool, device=device)  # row not finished yet
    inp = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    max_len = max_len.to(device)
    live_max = max_len
    tokens, attn = [], []
    for t in range(int(max_len.max()) + 1):
        feat, state, weights = model.decoder(inp, state, enc_out, keys, src_mask)
        logp = torch.log_softmax(model.decoder.out(feat[:, 0]).float(), dim=-1)
        _forbid(logp, live_max, t)
        if sampling is None:
            best_lp, best = logp.max(dim=-1)
        else:
            best = sampling.choose(logp, uniforms[alive, t])
            best_lp = logp.gather(1, best.unsqueeze(1)).squeeze(1)
        scores[alive] += torch.where(live, best_lp, torch.zeros_like(best_lp))
        step = torch.full((batch,), PAD, dtype=torch.long, device=device)
        step[alive] = torch.where(live & (best != EOS), best, torch.full_like(best, PAD))
        tokens.append(step)
        if weights is not None:
            full = weights.new_zeros(batch, weights.size(-1))
            full[alive] = weights[:, 0] * live.unsqueeze(1)
            attn.append(full)
        live = live & (best != EOS)
        n_live = int(live.sum())
        if n_live == 0:
            break
        if _compact_now(n_live, live.numel()):
            sel = live.nonzero().squeeze(1)
            alive, best, live_max, live = alive[sel], best[sel], live_max[sel], live[sel]
            enc_out, src_mask = enc_out[sel], src_mask[sel]
            keys = keys[sel] if keys is not None else None
            state = (state[0][:, sel], state[1][:, sel])
        inp = best.unsqueeze(1)
    return torch.stack(tokens, dim=1), scores, (torch.stack(attn, dim=1) if attn else None)


def _compact_now(n_live: int, n_rows: int) -> bool:
    """Drop finished rows from the batch once a quarter of it has finished: every step then
    costs about what is still being decoded, without copying the encoder states every step."""
    return n_rows - n_live >= max(1, n_rows // 4)


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


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_len: torch.Tensor,
    max_len: torch.Tensor,
    beam: int,
    length_penalty: float = 1.0,
    nbest: int = 1,
):
    """Batched beam search: every sentence of the batch is decoded together, `beam` hypotheses each.

    At each step the 2*beam best extensions per sentence are taken; those ending in EOS among the
    best `beam` are set aside as finished (scored with the length penalty), the best `beam` others
    continue. A sentence is done when its best extension ends in EOS (as in OpenNMT-py) or
    `beam` hypotheses have finished (max_len forces EOS); done sentences leave the batch.
    Returns tokens (B, T) (EOS removed, PAD after the end), scores (B,): the summed
    log-probability (EOS included) of the best finished hypothesis by length-normalised score,
    and with nbest > 1 the up to `nbest` best finished hypotheses of each sentence as lists of
    (ids, log-probability), best first (a sentence then stays until `nbest` have finished),
    else None.
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

    alive = torch.arange(B, device=device)  # sentence of each group of K rows still in the batch
    live = torch.ones(B, dtype=torch.bool, device=device)  # sentence not done yet
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per sentence at the start
    inp = torch.full((B * K, 1), BOS, dtype=torch.long, device=device)
    best_norm = torch.full((B,), float("-inf"), device=device)
    best_raw = torch.zeros(B, device=device)
    best_step = torch.zeros(B, dtype=torch.long, device=device)
    best_beam = torch.zeros(B, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.long, device=device)
    tokens_hist, parent_hist = (
        [],
        [],
    )  # per step, (B, K) for every sentence (read back only up to best_step)
    positions = torch.arange(2 * K, device=device)
    candidates: list[torch.Tensor] = []  # nbest > 1: (sentence, step, beam, raw, norm) rows
    for t in range(int(max_len.max()) + 1):
        b = alive.numel()
        rows = torch.arange(b, device=device)
        feat, state, _ = model.decoder(inp, state, enc_out, keys, src_mask)
        logp = torch.log_softmax(model.decoder.out(feat[:, 0]).float(), dim=-1)  # (b*K, V)
        _forbid(logp, max_len_k, t)
        # The best 2K extensions of a sentence are among the best 2K tokens of each of its
        # hypotheses: a top-k per hypothesis, then one over K * 2K candidates (the hypothesis
        # score is added to those only, not to all V).
        row_val, row_tok = logp.topk(2 * K, dim=-1)  # (b*K, 2K)
        row_val = row_val + scores.view(b * K, 1)
        top_val, top_idx = row_val.view(b, K * 2 * K).topk(2 * K, dim=-1)  # (b, 2K)
        top_beam = top_idx // (2 * K)
        top_tok = row_tok.view(b, K * 2 * K).gather(1, top_idx)
        is_eos = (top_tok == EOS) & torch.isfinite(top_val)

        # Finished hypotheses: EOS among the best K candidates of sentences not done yet.
        eos_first = is_eos[:, :K] & live.unsqueeze(1)
        norm = torch.where(
            eos_first, top_val[:, :K] / _length_penalty(t + 1, length_penalty), float("-inf")
        )
        cand_best, cand_pos = norm.max(dim=-1)
        better = cand_best > best_norm[alive]
        best_norm[alive] = torch.where(better, cand_best, best_norm[alive])
        best_raw[alive] = torch.where(better, top_val[rows, cand_pos], best_raw[alive])
        best_beam[alive] = torch.where(better, top_beam[rows, cand_pos], best_beam[alive])
        best_step[alive] = torch.where(better, torch.full_like(cand_pos, t), best_step[alive])
        finished[alive] += eos_first.sum(-1)
        if nbest > 1:
            r, k = eos_first.nonzero(as_tuple=True)
            found = [alive[r], torch.full_like(r, t), top_beam[r, k], top_val[r, k], norm[r, k]]
            candidates.append(torch.stack([x.double() for x in found], dim=1).cpu())

        # Live hypotheses: the best K candidates that did not end.
        order = torch.where(is_eos, positions + 2 * K, positions).argsort(dim=-1)[:, :K]
        new_scores = top_val.gather(1, order)
        new_scores = torch.where(is_eos.gather(1, order), float("-inf"), new_scores)
        parents = top_beam.gather(1, order)
        new_tok = top_tok.gather(1, order)
        full_tok = torch.zeros((B, K), dtype=torch.long, device=device)
        full_par = torch.zeros((B, K), dtype=torch.long, device=device)
        full_tok[alive], full_par[alive] = new_tok, parents
        tokens_hist.append(full_tok)
        parent_hist.append(full_par)

        live = live & ~((finished[alive] >= K) | (is_eos[:, 0] & (finished[alive] >= nbest)))
        n_live = int(live.sum())
        if n_live == 0:
            break
        sel = rows
        if _compact_now(n_live, b):
            sel = live.nonzero().squeeze(1)
            alive, live, parents, new_tok, new_scores = (
                alive[sel],
                live[sel],
                parents[sel],
                new_tok[sel],
                new_scores[sel],
            )
            keep_k = (sel.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
            enc_out, src_mask, max_len_k = enc_out[keep_k], src_mask[keep_k], max_len_k[keep_k]
            keys = keys[keep_k] if keys is not None else None
        flat_parent = (parents + sel.unsqueeze(1) * K).view(-1)
        state = (state[0][:, flat_parent], state[1][:, flat_parent])
        inp = new_tok.view(-1, 1)
        scores = new_scores

    # Backtrack the best hypothesis of each sentence: it ended with EOS at best_step, extending
    # beam best_beam of the previous step.
    rows = torch.arange(B, device=device)
    length = int(best_step.max()) if B else 0
    out = torch.full((B, max(length, 1)), PAD, dtype=torch.long, device=device)
    beam_at = best_beam.clone()
    for step in range(length - 1, -1, -1):
        active = step < best_step
        tok = tokens_hist[step][rows, beam_at]
        out[:, step] = torch.where(active, tok, out[:, step])
        beam_at = torch.where(active, parent_hist[step][rows, beam_at], beam_at)
    hyps = _nbest(candidates, tokens_hist, parent_hist, B, nbest) if nbest > 1 else None
    return out, best_raw, hyps


def _nbest(candidates, tokens_hist, parent_hist, sentences: int, n: int) -> list[list[tuple]]:
    """The n best finished hypotheses of each sentence by normalised score, backtracked."""
    found = torch.cat(candidates).numpy() if candidates else np.zeros((0, 5))
    tokens = torch.stack(tokens_hist).cpu().numpy()  # (T, B, K)
    parents = torch.stack(parent_hist).cpu().numpy()
    out: list[list[tuple]] = [[] for _ in range(sentences)]
    for sentence, step, beam, raw, _ in sorted(found.tolist(), key=lambda c: -c[4]):
        s = int(sentence)
        if len(out[s]) == n:
            continue
        ids, at = [], int(beam)
        for i in range(int(step) - 1, -1, -1):
            ids.append(int(tokens[i, s, at]))
            at = int(parents[i, s, at])
        out[s].append((ids[::-1], raw))
    return out


def max_output_length(src_len: torch.Tensor, ratio: float) -> torch.Tensor:
    """The longest output per sentence, EOS excluded: ratio x source tokens (EOS included) + 10."""
    return (src_len.double() * ratio).long() + 10


@dataclass
class Decoded:
    ids: list[list[int]]  # output token ids per sentence, EOS and padding removed
    scores: list[float]  # log-probability of each output
    truncated: list[bool]  # source was cut to max_src_len tokens before decoding
    nbest: list[list[tuple[list[int], float]]] | None = None  # with nbest > 1: (ids, score)s


def decode_ids(
    model: Seq2Seq,
    sources: list[list[int]],
    *,
    batch_size: int,
    max_src_len: int,
    max_length_ratio: float,
    device: torch.device | str = "cpu",
    beam: int = 1,
    length_penalty: float = 1.0,
    batch_tokens: int | None = None,
    nbest: int = 1,
    sampling: Sampling | None = None,
    keys: list | None = None,
) -> Decoded:
    """Decode source id lists (no EOS) in length-sorted batches of `batch_size` sentences, or of
    about `batch_tokens` source tokens (padding included): greedy when beam is 1, beam search
    (with its `nbest` best) otherwise, or sampling, each row's random stream keyed by `keys`
    (default: its position). Results in input order."""
    n = len(sources)
    ids: list[list[int]] = [[] for _ in range(n)]
    scores = [0.0] * n
    hyps: list | None = [[] for _ in range(n)] if nbest > 1 else None
    truncated = [len(s) + 1 > max_src_len for s in sources]
    values, offsets = flatten([s[: max_src_len - 1] for s in sources])
    lengths = np.diff(offsets) + 1  # EOS included
    keys = list(range(n)) if keys is None else keys
    was_training = model.training
    model.eval()
    try:
        for idx in _batches(lengths, batch_size, batch_tokens):
            src, src_len = pad(values, offsets, idx, bos=False, eos=True)
            src_t = torch.from_numpy(src).to(device)
            src_len_t = torch.from_numpy(src_len)
            max_len = max_output_length(src_len_t, max_length_ratio)
            found = None
            with autocast(src_t.device):
                if sampling is not None:
                    u = sampling.uniforms([keys[i] for i in idx], int(max_len.max()) + 1)
                    out, sc, _ = greedy(model, src_t, src_len_t, max_len, sampling, u.to(device))
                elif beam > 1 or nbest > 1:
                    out, sc, found = beam_search(
                        model, src_t, src_len_t, max_len, max(beam, nbest), length_penalty, nbest
                    )
                else:
                    out, sc, _ = greedy(model, src_t, src_len_t, max_len)
            out = out.cpu().numpy()
            sc = sc.cpu().tolist()
            for row, i in enumerate(idx):
                toks = out[row]
                ids[i] = toks[toks != PAD].tolist()
                scores[i] = sc[row]
                if hyps is not None:
                    hyps[i] = found[row]
    finally:
        model.train(was_training)
    return Decoded(ids, scores, truncated, hyps)


def _batches(lengths: np.ndarray, batch_size: int, batch_tokens: int | None):
    """Indices of length-sorted batches: `batch_size` rows, or rows x longest <= batch_tokens."""
    order = np.argsort(lengths, kind="stable")
    if not batch_tokens:
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]
        return
    start = 0
    for end in range(1, len(order) + 1):
        if end == len(order) or (end + 1 - start) * lengths[order[end]] > batch_tokens:
            yield order[start:end]
            start = end
