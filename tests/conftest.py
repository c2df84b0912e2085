import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(ROOT))


RAY_FIXTURES = {"ray_cluster", "tiny_run"}


def pytest_collection_modifyitems(items):
    """A test that uses the local Ray cluster (directly or through a fixture) is an integration
    test, whether or not its file says so: `make test-fast` (-m "not integration") starts none."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _no_ray_outside_integration_tests(request, monkeypatch):
    """Outside integration tests, starting Ray in the test process fails the test at once."""
    if request.node.get_closest_marker("integration") is None:
        import ray

        def refuse(*args, **kwargs):
            raise AssertionError("this test starts Ray: mark it pytest.mark.integration")

        monkeypatch.setattr(ray, "init", refuse)
    yield


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
    from job.corpus.vocab import build_vocab
    from job.model.seq2seq import build_model

    base = ["vocab.vocab_size=300", "model.embedding_dim=16", "model.hidden_size=16"]
    cfg = load_config(None, [*base, *overrides])
    vocab = build_vocab(cfg.vocab, [(SRC, TGT)])
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab.src_size, vocab.tgt_size)
    write_checkpoint(str(directory), model, None, {"step": 0}, cfg, vocab)
    return str(directory)


def write_parts(tmp_path, sizes):
    """Prepared parts of the given row counts; row i of the whole has src_ids [i + 4]."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts, start = [], 0
    for k, n in enumerate(sizes):
        ids = pa.list_(pa.int32())
        rows = range(start, start + n)
        table = pa.table({"src_ids": pa.array([[i + 4] for i in rows], ids),
                          "tgt_ids": pa.array([[5, 6]] * n, ids),
                          "target": [f"ref {i}" for i in rows]})  # fmt: skip
        path = str(tmp_path / f"{k:06d}.parquet")
        pq.write_table(table, path)
        parts.append((path, n))
        start += n
    return parts


def epoch_rows_and_digests(run_dir: str) -> tuple[list, tuple]:
    """Each finished epoch's (epoch_rows, epoch_digest) from metrics.jsonl, and what training
    each prepared row once gives (the rows, job.training.position.digest_of_parts)."""
    import json
    import os

    from job.corpus.manifest import PREPARED_DIR, part_paths, read_manifest
    from job.training.position import digest_of_parts

    prepared = os.path.join(run_dir, PREPARED_DIR)
    parts = part_paths(prepared, read_manifest(prepared), "train")
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    epochs = [(r["epoch_rows"], r["epoch_digest"]) for r in rows if "epoch_rows" in r]
    once = (sum(n for _, n in parts), f"{digest_of_parts(parts):016x}")
    return epochs, once


def doc_commands(path: Path) -> list[tuple[str, str]]:
    """(section heading, command) for every command in the ```bash blocks of a Markdown file:
    continuation lines joined, comments and blank lines dropped, `a && b` split."""
    out, heading, block = [], "", None
    for line in path.read_text(encoding="utf-8").splitlines():
        if block is None:
            if line.startswith("#"):
                heading = line.lstrip("# ").strip()
            elif line.strip() == "```bash":
                block = []
            continue
        if line.strip() == "```":
            text = "\n".join(block).replace("\\\n", " ")
            for cmd in text.splitlines():
                cmd = _strip_comment(cmd).strip()
                for part in (p.strip() for p in cmd.split(" && ")):
                    if part:
                        out.append((heading, re.sub(r"\s+", " ", part)))
            block = None
        else:
            block.append(line)
    return out


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line
