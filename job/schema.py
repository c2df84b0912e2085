"""The run config's sections: one pydantic model per YAML section, each field's docstring its
description (README's config reference is generated from them: `make docs`). job.config puts
them together into Config and loads YAML + --set overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    checkpoint_every_steps: int | None = Field(None, ge=1)
    """Also checkpoint every N optimizer steps, with the position in the epoch: a restart,
    --resume or elastic resize continues from there (null = at epoch ends only)."""
    validate_every_steps: int | None = Field(None, ge=1)
    """Also validate every N optimizer steps (null = at epoch ends only); a validation at a step
    checkpoint makes it a candidate for the best checkpoint."""
    global_batch_tokens: int | None = Field(None, ge=64)
    """Tokens per optimizer step over all workers: each worker accumulates ceil(global /
    (workers x batch_tokens)) batches per step, so elastic resizes keep the effective batch and
    schedule (null = one batch per worker per step)."""
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    """Training precision on GPUs: bf16 autocast (default on GPU), fp16 autocast with loss
    scaling, or fp32; CPU workers default to fp32 (null = that default)."""
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
    """One GPU per worker (NCCL; train.precision sets the dtype, bf16 by default)."""
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
