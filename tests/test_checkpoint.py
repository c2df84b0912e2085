import json

import pytest
import torch

from job.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from job.config import load_config
from job.corpus.vocab import build_vocab
from job.inference.translator import Translator
from job.model.search import decode_ids
from job.model.seq2seq import build_model

SRC = ["Save the file", "Open file", "Close the window", "Print %s"] * 10
TGT = ["Enregistrer le fichier", "Ouvrir le fichier", "Fermer la fenêtre", "Imprimer %s"] * 10


def make(tmp_path, **model):
    cfg = load_config(
        None,
        [
            "vocab.vocab_size=400",
            "model.embedding_dim=16",
            "model.hidden_size=16",
            *[f"model.{k}={v}" for k, v in model.items()],
        ],
    )
    vocab = build_vocab(cfg.vocab, [(SRC, TGT)])
    torch.manual_seed(0)
    m = build_model(cfg.model, vocab.src_size, vocab.tgt_size)
    opt = torch.optim.AdamW(m.parameters())
    loss, _n = m(
        torch.tensor([[5, 6, 3]]), torch.tensor([3]), torch.tensor([[2, 7]]), torch.tensor([[7, 3]])
    )
    loss.backward()
    opt.step()
    d = tmp_path / "ckpt"
    write_checkpoint(str(d), m, opt, {"step": 7, "epoch": 1}, cfg, vocab)
    return d, m, cfg, vocab


def test_round_trip_is_self_contained(tmp_path):
    d, m, cfg, vocab = make(tmp_path)
    loaded = read_checkpoint(str(d))
    assert loaded.state["step"] == 7 and loaded.cfg == cfg
    m2 = loaded.model()
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert loaded.optimizer_state()["state"]
    assert loaded.vocab.encode_src(SRC[:2]) == vocab.encode_src(SRC[:2])
    # The same translations from the reloaded model as from the original one.
    src = vocab.encode_src(SRC[:4])
    kw = {"batch_size": 2, "max_src_len": 64, "max_length_ratio": 2.0}
    assert decode_ids(m.eval(), src, **kw).ids == decode_ids(m2.eval(), src, **kw).ids
    out = Translator.from_checkpoint(str(d)).translate(["Save the file", "", None])
    assert [t.status for t in out] == ["ok", "empty_source", "missing_source"]
    assert isinstance(out[0].score, float) and out[0].score <= 0


def test_weights_are_plain_tensors(tmp_path):
    d, *_ = make(tmp_path)
    state = torch.load(d / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_vocabulary_that_does_not_match_weights_is_refused(tmp_path):
    d, *_ = make(tmp_path)
    meta = json.loads((d / "vocab" / "vocab.json").read_text())
    letters = [chr(c) for c in range(0x3B1, 0x3C9)] + [chr(c) for c in range(0x430, 0x44F)]
    other = build_vocab(
        load_config(None, ["vocab.vocab_size=500"]).vocab, [(SRC + letters, TGT + letters)]
    )
    other.save(str(d / "vocab"))
    assert json.loads((d / "vocab" / "vocab.json").read_text())["size"] != meta["size"]
    with pytest.raises(CheckpointError, match="do not match"):
        read_checkpoint(str(d)).model()


def test_incomplete_checkpoint_is_refused(tmp_path):
    d, *_ = make(tmp_path)
    (d / "model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"model\.pt is missing"):
        read_checkpoint(str(d))


def test_checkpoint_uri_keeps_cloud_schemes(tmp_path):
    from types import SimpleNamespace

    from ray.train import Checkpoint

    from job.checkpoint import checkpoint_uri

    assert checkpoint_uri(Checkpoint(str(tmp_path))) == str(tmp_path)
    # What Ray Train hands back for s3:// / gs:// storage: the path without its scheme.
    s3 = SimpleNamespace(
        path="bucket/runs/x/checkpoint_1", filesystem=SimpleNamespace(type_name="s3")
    )
    gcs = SimpleNamespace(
        path="bucket/runs/x/checkpoint_1", filesystem=SimpleNamespace(type_name="gcs")
    )
    assert checkpoint_uri(s3) == "s3://bucket/runs/x/checkpoint_1"
    assert checkpoint_uri(gcs) == "gs://bucket/runs/x/checkpoint_1"


def test_best_checkpoint_by_validation_bleu_then_latest(tmp_path):
    from types import SimpleNamespace

    from ray.train import Checkpoint

    from job.checkpoint import best_checkpoint

    a, b, c = (Checkpoint(str(tmp_path / n)) for n in "abc")
    scored = [
        (a, {"valid_bleu": 20.0, "step": 10}),
        (b, {"valid_bleu": 25.0, "step": 20}),
        (c, {"valid_bleu": 25.0, "step": 30}),
    ]
    result = SimpleNamespace(best_checkpoints=scored, checkpoint=a, metrics={"step": 10})
    assert best_checkpoint(result) == (str(tmp_path / "c"), {"valid_bleu": 25.0, "step": 30})
    no_valid = SimpleNamespace(
        best_checkpoints=[(a, {"step": 10})], checkpoint=b, metrics={"step": 20}
    )
    assert best_checkpoint(no_valid) == (str(tmp_path / "b"), {"step": 20})
    with pytest.raises(RuntimeError, match="without a checkpoint"):
        best_checkpoint(SimpleNamespace(best_checkpoints=[], checkpoint=None, metrics=None))


def test_inference_fetches_no_optimizer_state_from_a_uri(tmp_path):
    import os

    from job.checkpoint import local_checkpoint

    d, *_ = make(tmp_path)
    assert (d / "optimizer.pt").exists()
    with local_checkpoint(d.as_uri(), inference=True) as local:
        names = sorted(os.listdir(local))
        assert names == ["config.yaml", "model.pt", "state.json", "vocab"]
        assert read_checkpoint(local).model() is not None
    missing = local_checkpoint((tmp_path / "nope").as_uri(), inference=True)
    with pytest.raises(CheckpointError, match="checkpoint not found"), missing:
        pass
