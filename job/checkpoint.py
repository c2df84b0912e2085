"""Checkpoint directories: self-contained (weights, optimizer, step, vocabulary, config), and
finding the best one of a finished run.

Layout of a checkpoint directory:
    model.pt       model state_dict (tensors only: loaded with torch.load(weights_only=True))
    optimizer.pt   optimizer state_dict (tensors and plain values only)
    state.json     step, epoch, elapsed training time, best validation BLEU, metrics at save time,
                   mid-epoch the position (job.training.position), with fp16 the GradScaler's state
    position.npy   mid-epoch only: the epoch's done rows, one bit each (job.training.position)
    config.yaml    the resolved run config
    vocab/         vocab.json (+ spm.model)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import yaml

from job import storage
from job.config import Config, dump_config, validate_config
from job.corpus.vocab import VOCAB_DIR, Vocabulary
from job.errors import CheckpointError
from job.model.seq2seq import Seq2Seq, build_model

MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"


def write_checkpoint(
    directory: str,
    model: Seq2Seq | dict,
    optimizer: torch.optim.Optimizer | dict | None,
    state: dict,
    cfg: Config,
    vocab: Vocabulary,
) -> None:
    """Write a checkpoint directory; model and optimizer may be given as their state dicts (a
    host_copy taken earlier, when the files are written off the training thread)."""
    os.makedirs(directory, exist_ok=True)
    weights = model if isinstance(model, dict) else model.state_dict()
    torch.save(weights, os.path.join(directory, MODEL_FILE))
    if optimizer is not None:
        moments = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
        torch.save(moments, os.path.join(directory, OPTIMIZER_FILE))
    with open(os.path.join(directory, STATE_FILE), "w") as f:
        json.dump(state, f, indent=1)
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        f.write(dump_config(cfg))
    vocab.save(os.path.join(directory, VOCAB_DIR))


def host_copy(tree):
    """A copy of a state dict (nested dicts/lists of tensors and plain values) in host memory:
    what the weights and optimizer moments are now, while training goes on changing them."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: host_copy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(host_copy(v) for v in tree)
    return tree


@dataclass
class LoadedCheckpoint:
    directory: str
    cfg: Config
    vocab: Vocabulary
    state: dict

    def model(self, device: torch.device | str = "cpu") -> Seq2Seq:
        model = build_model(self.cfg.model, self.vocab.src_size, self.vocab.tgt_size)
        weights = torch.load(
            os.path.join(self.directory, MODEL_FILE), map_location="cpu", weights_only=True
        )
        check_weights_match(weights, model, self.directory)
        model.load_state_dict(weights)
        return model.to(device)

    def optimizer_state(self) -> dict | None:
        path = os.path.join(self.directory, OPTIMIZER_FILE)
        if not os.path.exists(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)


def check_weights_match(weights: dict, model: Seq2Seq, where: str) -> None:
    """Refuse weights whose shapes do not fit the model built from the checkpoint's config+vocab."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            filter(
                None,
                [
                    f"missing {missing[:5]}" if missing else "",
                    f"unexpected {unexpected[:5]}" if unexpected else "",
                    "; ".join(wrong[:5]),
                ],
            )
        )
        raise CheckpointError(
            f"{where}: weights do not match the vocabulary/config stored with them ({detail})"
        )


def read_checkpoint(directory: str) -> LoadedCheckpoint:
    for name in (MODEL_FILE, STATE_FILE, CONFIG_FILE, VOCAB_DIR):
        if not os.path.exists(os.path.join(directory, name)):
            raise CheckpointError(f"{directory} is not a complete checkpoint: {name} is missing")
    with open(os.path.join(directory, CONFIG_FILE)) as f:
        cfg = validate_config(yaml.safe_load(f), os.path.join(directory, CONFIG_FILE))
    with open(os.path.join(directory, STATE_FILE)) as f:
        state = json.load(f)
    vocab = Vocabulary.load(os.path.join(directory, VOCAB_DIR))
    return LoadedCheckpoint(directory, cfg, vocab, state)


INFERENCE_FILES = (MODEL_FILE, STATE_FILE, CONFIG_FILE)  # + the vocabulary: no optimizer


@contextmanager
def local_checkpoint(path: str, inference: bool = False):
    """A local directory with the checkpoint's files, downloaded first if `path` is a URI: all
    of them, or with `inference` only what translating needs (the optimizer state is about two
    thirds of a checkpoint)."""
    if not storage.is_uri(path):
        if not os.path.isdir(path):
            raise CheckpointError(f"checkpoint not found: {path}")
        yield path
        return
    if not storage.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if not inference:
        from ray.train import Checkpoint

        with Checkpoint(path).as_directory() as d:
            yield d
        return
    with tempfile.TemporaryDirectory(prefix="checkpoint-") as d:
        names = [
            *INFERENCE_FILES,
            *(f"{VOCAB_DIR}/{n}" for n in storage.list_dir(storage.join(path, VOCAB_DIR))),
        ]
        for name in names:
            source = storage.join(path, *name.split("/"))
            if storage.exists(source):
                os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
                with open(os.path.join(d, name), "wb") as f:
                    f.write(storage.read_bytes(source))
        yield d


def checkpoint_uri(ckpt) -> str:
    """A path or URI a Ray Train Checkpoint can be read back from: Ray Train keeps cloud paths
    without their scheme (pyarrow's filesystem holds it), so put it back."""
    fs_type = getattr(ckpt.filesystem, "type_name", "local")
    scheme = {"s3": "s3://", "gcs": "gs://", "hdfs": "hdfs://", "abfs": "abfs://"}.get(fs_type, "")
    return scheme + ckpt.path if scheme and not storage.is_uri(ckpt.path) else ckpt.path


def best_checkpoint(result) -> tuple[str, dict]:
    """Path/URI and metrics of a Ray Train Result's best checkpoint by validation BLEU (else the
    latest)."""
    candidates = [
        (c, m)
        for c, m in (result.best_checkpoints or [])
        if m.get("valid_bleu") is not None and not math.isnan(m["valid_bleu"])
    ]  # a step checkpoint that was not validated reports NaN
    if candidates:
        ckpt, metrics = max(candidates, key=lambda cm: (cm[1]["valid_bleu"], cm[1].get("step", 0)))
        return checkpoint_uri(ckpt), metrics
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    return checkpoint_uri(result.checkpoint), result.metrics or {}
