import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster shared by the integration tests of a session."""
    import ray

    from job.runtime import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray()
    yield ray
    ray.shutdown()


def tiny_overrides(tmp_path, **extra) -> list[str]:
    """--set pairs for a few-step run on the tiny corpus."""
    base = {
        "storage_path": str(tmp_path / "runs"),
        "data.train": str(DATA / "tiny_train.csv"),
        "data.valid": str(DATA / "tiny_valid.csv"),
        "data.test": str(DATA / "tiny_test.csv"),
        "vocab.vocab_size": 500,
        "model.embedding_dim": 32,
        "model.hidden_size": 32,
        "train.epochs": 2,
        "train.batch_tokens": 800,
        "train.log_every_steps": 2,
        "train.warmup_steps": 5,
        "scaling.num_workers": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


# Rows nobody cleaned, appended to the tiny training corpus of `tiny_run`: each is counted and
# set aside with its reason, and training goes on.
MESSY_ROWS = b'one,two\n"never closed,x,y\nbad\xff,byte,z\n,empty source,z\nsource,target,origin\n'
MESSY_REASONS = {
    "wrong_field_count": 1,
    "unterminated_quote": 1,
    "invalid_utf8": 1,
    "empty_source": 1,
    "duplicate_header": 1,
}


@pytest.fixture(scope="session")
def tiny_run(ray_cluster, tmp_path_factory):
    """One trained tiny run (2 DDP workers, 2 epochs) shared by the tests that need a trained
    checkpoint: returns its config and the train command's summary."""
    from job.config import load_config
    from job.pipeline import run_train

    tmp = tmp_path_factory.mktemp("tiny")
    train = tmp / "train.csv"
    train.write_bytes((DATA / "tiny_train.csv").read_bytes() + MESSY_ROWS)
    cfg = load_config(None, tiny_overrides(tmp, **{"data.train": str(train)}))
    return cfg, run_train(cfg)


SRC = ["Save the file", "Open file", "Close the window", "Print %s"] * 10
TGT = ["Enregistrer le fichier", "Ouvrir le fichier", "Fermer la fenêtre", "Imprimer %s"] * 10


def make_checkpoint(directory, *overrides: str) -> str:
    """An untrained checkpoint (seeded weights, a vocabulary built from SRC/TGT), written to
    `directory`: for tests that need the checkpoint format, not a trained model."""
    import torch

    from job.checkpoint import write_checkpoint
    from job.config import load_config
    from job.model import build_model
    from job.vocab import build_vocab

    base = ["vocab.vocab_size=300", "model.embedding_dim=16", "model.hidden_size=16"]
    cfg = load_config(None, [*base, *overrides])
    vocab = build_vocab(cfg.vocab, [(SRC, TGT)])
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab.src_size, vocab.tgt_size)
    write_checkpoint(str(directory), model, None, {"step": 0}, cfg, vocab)
    return str(directory)
