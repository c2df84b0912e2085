"""Validation during training: loss and perplexity over every validation row, BLEU/chrF of
greedy translations of the first train.valid_bleu_max_rows rows, combined over all ranks."""

from __future__ import annotations

import math

import numpy as np
import torch

from job.bleu import score
from job.config import Config
from job.corpus.vocab import Vocabulary
from job.model.batching import chunk_batches
from job.model.device import autocast
from job.model.search import decode_ids
from job.training.distributed import all_gather, all_reduce
from job.training.feeder import ValidSet


@torch.no_grad()
def validate(model, valid: ValidSet, vocab: Vocabulary, cfg: Config, device) -> dict:
    """Collective (every rank calls it with its own share). Returns valid_loss, valid_ppl,
    valid_rows and, when any row was decoded, valid_bleu and valid_chrf."""
    model.eval()
    loss_sum, tokens = 0.0, 0
    if len(valid.index):
        v = valid
        batches = chunk_batches(
            v.src_vals,
            v.src_offs,
            v.tgt_vals,
            v.tgt_offs,
            cfg.train.batch_tokens,
            np.random.default_rng(0),
        )
        for batch in batches:
            b = batch.to(device)
            with autocast(device):
                loss, n = model(b.src, b.src_len, b.tgt_in, b.tgt_out)
            loss_sum += float(loss)
            tokens += n
    limit = cfg.train.valid_bleu_max_rows
    pick = [i for i, g in enumerate(valid.index) if limit is None or g < limit]
    sources = valid.src_lists
    decoded = decode_ids(
        model,
        [sources[i] for i in pick],
        batch_size=cfg.translate.batch_size,
        max_src_len=cfg.data.max_length,
        max_length_ratio=cfg.translate.max_length_ratio,
        device=device,
    )
    hyps = vocab.decode_tgt(decoded.ids)
    mine = [(int(valid.index[i]), h, valid.references[i]) for i, h in zip(pick, hyps)]
    rows = sorted(r for part in all_gather(mine) for r in part)
    loss_sum, tokens = all_reduce([loss_sum, float(tokens)])
    model.train()
    out = {"valid_loss": loss_sum / max(tokens, 1.0), "valid_rows": len(rows)}
    out["valid_ppl"] = math.exp(min(out["valid_loss"], 50.0))
    if rows:
        scores = score([r[1] for r in rows], [r[2] for r in rows])
        out["valid_bleu"], out["valid_chrf"] = scores["bleu"], scores["chrf"]
    return out
