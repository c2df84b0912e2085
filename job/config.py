"""Run configuration: pydantic models loaded from YAML, with `--set section.key=value` overrides.

Every key is validated; an unknown key or a bad value is an error that names the key, the value,
what is allowed, and where it came from (the YAML file or a --set pair).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from job import storage
from job.errors import ConfigError


class _Section(BaseModel):
    # Each field's docstring is its description (the config reference in README.md).
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


class ParallelFiles(_Section):
    """Two line-aligned text files, as WMT and OPUS ship corpora (corpus.en + corpus.fr, .gz ok)."""

    source: str
    """The source-language file: local path or URI."""
    target: str
    """The target-language file: line i translates the source's line i."""

    def __str__(self) -> str:
        return f"{self.source} + {self.target}"


class DataConfig(_Section):
    """Where the parallel corpus is and how to read it."""

    train: str | ParallelFiles = "data/sample/train.csv"
    """Training corpus: CSV/TSV/Parquet file, directory or glob, local path or URI (s3://,
    gs://); or {source: PATH, target: PATH}, two line-aligned text files."""
    valid: str | ParallelFiles | None = "data/sample/valid.csv"
    """Validation corpus (every row is used: loss, perplexity, BLEU each epoch)."""
    test: str | ParallelFiles | None = "data/sample/test.csv"
    """Test corpus, bulk-translated after training and scored with BLEU/chrF."""
    source_column: str = Field("source", min_length=1)
    """Column holding source sentences."""
    target_column: str = Field("target", min_length=1)
    """Column holding target sentences."""
    max_length: int = Field(128, ge=2, le=4096)
    """Longest sentence, in vocabulary tokens per side; longer training pairs are rejected (reason
    too_long)."""
    prepared: str | None = None
    """Train on another run's prepared data (its `prepared/` directory) instead of reading the
    corpus again; refused when its manifest does not match data.train/valid or the vocab."""
    piece_mb: float = Field(32, gt=0)
    """Large uncompressed files are read in pieces of this many MB, by as many Ray tasks."""


class VocabConfig(_Section):
    """The vocabulary, built once on the driver before training."""

    type: Literal["sentencepiece", "word"] = "sentencepiece"
    """sentencepiece: one joint subword vocabulary for both sides; word: whitespace tokens per
    side, as the seed."""
    vocab_size: int = Field(8000, ge=1, le=1_000_000)
    """Subword vocabulary size (joint; at least ~300: 256 byte-fallback pieces + characters), or
    word vocabulary size per side."""
    model_type: Literal["unigram", "bpe"] = "unigram"
    """SentencePiece algorithm."""
    character_coverage: float = Field(0.9995, gt=0.9, le=1.0)
    """SentencePiece character coverage; rarer characters are spelled with byte-fallback pieces
    (1.0 keeps every character: fine for alphabetic scripts, too many pieces for CJK)."""
    max_sentences: int = Field(2_000_000, ge=1000)
    """Sentences (both sides count) in the seeded random sample of the training corpus that the
    vocabulary is built from."""
    min_frequency: int = Field(1, ge=1)
    """word vocabulary: drop words seen fewer times."""


class ModelConfig(_Section):
    """The LSTM encoder-decoder."""

    embedding_dim: int = Field(256, ge=1)
    """Token embedding size."""
    hidden_size: int = Field(512, ge=2)
    """LSTM hidden size (encoder outputs and decoder state)."""
    num_layers: int = Field(1, ge=1, le=16)
    """LSTM layers in encoder and decoder."""
    bidirectional: bool = True
    """Bidirectional encoder (hidden_size/2 per direction)."""
    attention: Literal["luong", "none"] = "luong"
    """luong: global attention with masked source padding; none: the seed's plain
    encoder-decoder."""
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Dropout on embeddings, between LSTM layers and before the output layer."""
    tie_embeddings: bool = True
    """Output layer shares the target embedding matrix."""
    share_embeddings: bool = True
    """Source and target share one embedding matrix (needs the joint sentencepiece vocabulary)."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(
                "model.hidden_size must be even when model.bidirectional is true "
                f"(got {self.hidden_size})"
            )
        plain = self.attention == "none"
        if self.tie_embeddings and plain and self.hidden_size != self.embedding_dim:
            raise ValueError(
                "model.tie_embeddings with model.attention: none needs "
                "model.hidden_size == model.embedding_dim "
                f"(got {self.hidden_size} and {self.embedding_dim}); "
                "set model.tie_embeddings: false"
            )
        return self


class TrainConfig(_Section):
    """The training loop (per Ray Train worker)."""

    epochs: int = Field(10, ge=1)
    """Passes over the training data (the run may stop earlier at max_minutes)."""
    max_minutes: float | None = Field(None, gt=0)
    """Wall-clock budget for the training loop; stops cleanly and keeps the last checkpoint."""
    batch_tokens: int = Field(6000, ge=64)
    """Tokens per batch per worker (source + target, padding included); batches are
    length-bucketed."""
    lr: float = Field(2e-3, gt=0, lt=1)
    """Peak learning rate (Adam)."""
    warmup_steps: int = Field(200, ge=0)
    """Linear learning-rate warm-up steps."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "cosine"
    """Decay after warm-up, over the run's length (epochs or max_minutes, whichever ends first)."""
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    """Final learning rate as a fraction of lr."""
    clip_norm: float = Field(1.0, gt=0)
    """Gradient clipping (global L2 norm)."""
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    """Label smoothing of the cross-entropy loss."""
    teacher_forcing_ratio: float = Field(1.0, ge=0, le=1)
    """1.0: the decoder runs over the whole target in one call (fast); <1: the seed's step loop."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    log_every_steps: int = Field(50, ge=1)
    """Steps between lines in metrics.jsonl."""
    valid_bleu_max_rows: int | None = Field(2000, ge=1)
    """Validation rows decoded for BLEU each epoch (all rows are used for loss); null = all."""
    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many validations without a better validation BLEU; null = never."""
    average_last: int = Field(0, ge=0)
    """At the end, average the weights of the last N epoch checkpoints and validate the mean as one
    more checkpoint (0/1 = off)."""
    keep_checkpoints: int = Field(3, ge=1)
    """Best checkpoints kept (by validation BLEU); the latest is always kept too."""
    shuffle_chunk_rows: int = Field(200_000, ge=1000)
    """Rows per worker bucketed and shuffled together."""
    threads_per_worker: int | None = Field(None, ge=1)
    """Torch intra-op threads per worker; default = the worker's CPUs."""
    seed: int = 1
    """Random seed."""


class ScalingSection(_Section):
    """Ray Train workers."""

    num_workers: int | list[int] = 2
    """Ray Train workers (DDP ranks): a number, or [min, max] for elastic training (starts with
    what the cluster has, at least min; keeps going when workers are lost; grows back up to max
    as nodes return)."""
    elastic_resize_interval_s: float = Field(60.0, gt=0)
    """Elastic runs: seconds between checks for room to add workers (a resize restarts the workers
    from the latest checkpoint)."""
    use_gpu: bool = False
    """One GPU per worker (NCCL, bf16 autocast)."""
    cpus_per_worker: float = Field(1, gt=0)
    """CPUs reserved per worker."""
    max_failures: int = Field(0, ge=-1)
    """Worker-group restarts from the latest checkpoint (-1: unlimited)."""

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v):
        if isinstance(v, list):
            if len(v) != 2 or not 1 <= v[0] <= v[1]:
                raise ValueError(
                    f"must be a number >= 1 or [min, max] with 1 <= min <= max, got {v}"
                )
        elif v < 1:
            raise ValueError(f"must be >= 1 (or [min, max] for elastic training), got {v}")
        return v

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if isinstance(self.num_workers, list) else self.num_workers

    def ray_num_workers(self) -> int | tuple[int, int]:
        return tuple(self.num_workers) if isinstance(self.num_workers, list) else self.num_workers


class TranslateConfig(_Section):
    """Batched decoding for validation BLEU and bulk translation."""

    batch_size: int = Field(128, ge=1)
    """Sentences per decoding batch."""
    num_actors: int | None = Field(None, ge=1)
    """Translator actors in the Ray Data pool; default = GPUs if use_gpu else CPUs."""
    max_length_ratio: float = Field(2.0, gt=0)
    """Longest translation = ratio * source tokens + 10."""
    beam_size: int = Field(5, ge=1, le=64)
    """Beam width for bulk translation and the test scores (1 = greedy); validation is greedy."""
    length_penalty: float = Field(1.0, ge=0)
    """GNMT length penalty alpha for ranking finished beam hypotheses (0 = raw log-probability)."""


class Config(_Section):
    """One training run."""

    name: str = Field("sample", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    """Run name: the run directory is storage_path/name."""
    storage_path: str = "runs"
    """Where runs live: a local path (made absolute) or a URI all nodes reach (s3, gs, NFS)."""
    data: DataConfig = DataConfig()
    vocab: VocabConfig = VocabConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingSection = ScalingSection()
    translate: TranslateConfig = TranslateConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.model.share_embeddings and self.vocab.type != "sentencepiece":
            raise ValueError(
                "model.share_embeddings requires the joint vocabulary (vocab.type: sentencepiece); "
                "set model.share_embeddings: false"
            )
        return self

    @property
    def run_dir(self) -> str:
        return storage.join(self.storage_path, self.name)


def _parse_override(pair: str) -> tuple[list[str], Any]:
    if "=" not in pair:
        raise ConfigError(f"--set {pair!r}: expected section.key=value")
    key, raw = pair.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {pair!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {pair!r}: value is not valid YAML ({exc})") from None
    return path, value


def _apply_override(tree: dict, path: list[str], value: Any, pair: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {pair}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def _format_errors(exc: ValidationError, source: str, overridden: set[str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = "--set" if key in overridden else source
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            section = _section_for(err["loc"][:-1])
            if section is not None:
                msg += f" (allowed: {', '.join(section.model_fields)})"
        value = err.get("input")
        shown = (
            ""
            if err["type"] in ("extra_forbidden", "missing") or isinstance(value, dict)
            else f" (got {value!r})"
        )
        lines.append(f"{where}: {key}: {msg}{shown}")
    return "invalid config: " + "; ".join(lines)


def _section_for(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Load a YAML run config, apply `section.key=value` overrides, validate.

    Relative local paths in the file (data, storage_path) stay relative to the working directory,
    as users type them; storage_path is made absolute because Ray Train requires it.
    """
    source = str(path) if path else "(defaults)"
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, got {type(tree).__name__}"
            )
    overridden: set[str] = set()
    for pair in overrides or []:
        keys, value = _parse_override(pair)
        _apply_override(tree, keys, value, pair)
        overridden.add(".".join(keys))
    return validate_config(tree, source, overridden)


def validate_config(
    tree: dict, source: str = "(config)", overridden: set[str] | None = None
) -> Config:
    tree = copy.deepcopy(tree)
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, overridden or set())) from None
    if not storage.is_uri(cfg.storage_path):
        cfg.storage_path = os.path.abspath(cfg.storage_path)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
