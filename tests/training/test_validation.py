"""Validation (job.training.validation) in one process: loss over every row, BLEU over the first
rows."""

import numpy as np
import pytest
import torch

from job.config import load_config
from job.corpus.vocab import build_vocab
from job.model.batching import flatten
from job.model.seq2seq import build_model
from job.training.feeder import ValidSet
from job.training.validation import validate

SRC = ["Save the file", "Open file", "Close the window", "Print %s"] * 5
TGT = ["Enregistrer le fichier", "Ouvrir le fichier", "Fermer la fenêtre", "Imprimer %s"] * 5


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(
        None,
        [
            "vocab.vocab_size=300",
            "model.embedding_dim=16",
            "model.hidden_size=16",
            "train.valid_bleu_max_rows=7",
        ],
    )
    vocab = build_vocab(cfg.vocab, [(SRC, TGT)])
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab.src_size, vocab.tgt_size)
    sv, so = flatten(vocab.encode_src(SRC))
    tv, to = flatten(vocab.encode_tgt(TGT))
    valid = ValidSet(sv, so, tv, to, np.arange(len(SRC)), list(TGT))
    return cfg, vocab, model, valid


def test_loss_over_every_row_and_bleu_over_the_first_rows(setup):
    cfg, vocab, model, valid = setup
    model.train()
    out = validate(model, valid, vocab, cfg, "cpu")
    assert model.training  # back in training mode afterwards
    assert out["valid_rows"] == 7  # train.valid_bleu_max_rows
    assert {"valid_loss", "valid_ppl", "valid_bleu", "valid_chrf"} <= set(out)
    assert out["valid_ppl"] == pytest.approx(np.exp(out["valid_loss"]))
    # The loss is the mean over all target tokens (EOS included): compare with the model directly.
    model.eval()
    with torch.no_grad():
        from job.model.batching import make_batch

        b = make_batch(
            valid.src_vals, valid.src_offs, valid.tgt_vals, valid.tgt_offs, np.arange(len(SRC))
        )
        loss, n = model(b.src, b.src_len, b.tgt_in, b.tgt_out)
    assert out["valid_loss"] == pytest.approx(float(loss) / n, rel=1e-4)


def test_an_empty_share_gives_no_scores(setup):
    cfg, vocab, model, _ = setup
    empty = np.zeros(0, np.int64)
    share = ValidSet(empty, np.zeros(1, np.int64), empty, np.zeros(1, np.int64), empty, [])
    out = validate(model, share, vocab, cfg, "cpu")
    assert out["valid_rows"] == 0 and "valid_bleu" not in out
