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

    from job.pipeline import init_ray

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
