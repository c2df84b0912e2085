"""The train command end to end, on the driver: corpus -> vocabulary -> DDP training -> test scores.

Run directory (storage_path/name/):
    config.yaml        the resolved config        vocab/          the shared vocabulary
    data.json          rows read/used/rejected    rejects/<split>/ rejected rows, CSV parts
    prepared/          encoded train/valid Parquet + manifest.json (reused on --resume)
    metrics.jsonl      training + validation log  checkpoint_*/   Ray Train's checkpoints
    test_translations.csv, summary.json
"""

from __future__ import annotations

import json
import time

import yaml

from job import storage
from job.checkpoint import CONFIG_FILE, best_checkpoint
from job.config import Config, dump_config
from job.corpus.blocks import vocab_key
from job.corpus.manifest import (
    MANIFEST,
    PREPARED_DIR,
    VERSION,
    changes,
    part_paths,
    read_manifest,
    what_it_was_made_from,
    write_manifest,
)
from job.corpus.prepare import (
    build_vocab_on_cluster,
    classify_split,
    encode_split,
    sample_for,
    timed,
)
from job.corpus.vocab import VOCAB_DIR, Vocabulary
from job.errors import ConfigError, DataError
from job.inference.bulk import BulkOptions, bulk_translate, default_actors
from job.runtime import check_shared_storage
from job.training.trainer import fit

# Keys whose change makes an existing checkpoint unusable (resume refuses them).
CHECKPOINT_SHAPING_KEYS = ("vocab", "model")


def diff_configs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees."""
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        name = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_configs(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def _check_run_dir(cfg: Config, resume: bool) -> Vocabulary | None:
    """Refuse to overwrite a run; on --resume, refuse config changes that break its checkpoints."""
    cfg_path = storage.join(cfg.run_dir, CONFIG_FILE)
    if not storage.exists(cfg_path):
        if resume:
            raise ConfigError(f"--resume: no run to resume at {cfg.run_dir} (no {CONFIG_FILE})")
        return None
    if not resume:
        raise ConfigError(
            f"run directory {cfg.run_dir} already exists; pass --resume to continue it, "
            f"or start a new run with --set name=<new name>"
        )
    old = yaml.safe_load(storage.read_text(cfg_path))
    new = cfg.model_dump(mode="json")
    changed = [
        d
        for key in CHECKPOINT_SHAPING_KEYS
        for d in diff_configs(old.get(key, {}), new.get(key, {}), key + ".")
    ]
    if changed:
        raise ConfigError(
            "--resume: these keys differ from the run's config "
            "and would make its checkpoints invalid: " + "; ".join(changed)
        )
    return Vocabulary.load(storage.join(cfg.run_dir, VOCAB_DIR))


def prepare_data(cfg: Config, vocab: Vocabulary | None) -> tuple[dict, str, Vocabulary]:
    """The prepared data (manifest, its directory) and the vocabulary: reused when a manifest
    matches (data.prepared, or this run's on --resume), else made (job.corpus.prepare)."""
    own = storage.join(cfg.run_dir, PREPARED_DIR)
    directory = cfg.data.prepared or own
    manifest = read_manifest(directory)
    if manifest is not None:
        return _reuse(cfg, directory, manifest, vocab)
    if cfg.data.prepared:
        raise ConfigError(
            f"data.prepared: no prepared data at {directory} (no {MANIFEST}); "
            "point it at a run's prepared/ directory"
        )
    for leftover in (
        own,
        storage.join(cfg.run_dir, "staging"),
        storage.join(cfg.run_dir, "rejects"),
    ):
        if storage.exists(leftover):  # an interrupted preparation: start it again
            storage.delete_dir(leftover)
    return _prepare(cfg, own, vocab)


def _reuse(cfg: Config, directory: str, manifest: dict, vocab: Vocabulary | None):
    changed = changes(manifest, cfg)
    if changed:
        raise ConfigError(
            f"the prepared data at {directory} was made from other inputs: "
            + "; ".join(changed)
            + ". Start a new run (--set name=<new name>) to prepare the corpus again"
        )
    prepared_vocab = Vocabulary.load(storage.join(directory, VOCAB_DIR))
    if vocab is not None and vocab_key(vocab)[0] != vocab_key(prepared_vocab)[0]:
        raise ConfigError(
            f"the prepared data at {directory} was encoded with another vocabulary than "
            f"the run's ({storage.join(cfg.run_dir, VOCAB_DIR)})"
        )
    train = manifest["splits"]["train"]
    print(
        f"[data] reusing the prepared data at {directory}: {train['used']} training pairs "
        f"(of {train['read']} read); no corpus read or tokenised",
        flush=True,
    )
    return manifest, directory, prepared_vocab


def _prepare(cfg: Config, directory: str, vocab: Vocabulary | None):
    d, run_dir = cfg.data, cfg.run_dir
    cols = [d.source_column, d.target_column]
    piece_bytes = int(d.piece_mb * (1 << 20))
    t0 = clock = time.perf_counter()
    sample = None
    if vocab is None:
        sample = sample_for(cfg.vocab.max_sentences, cfg.train.seed)
    splits = {"train": classify_split(d.train, "train", cols, run_dir, sample=sample,
                                      piece_bytes=piece_bytes)}  # fmt: skip
    if splits["train"].used == 0:
        raise DataError(
            f"{d.train}: no usable training rows ({splits['train'].summary()['rejected']})"
        )
    for name in ("valid", "test"):
        if getattr(d, name):
            splits[name] = classify_split(
                getattr(d, name), name, cols, run_dir, keep=name == "valid", piece_bytes=piece_bytes
            )
    read = sum(s.read for s in splits.values())
    clock = timed(f"read and classified {read} rows", clock)
    if vocab is None:
        vocab = build_vocab_on_cluster(cfg.vocab, sample)
        clock = timed(
            f"built {vocab.kind} vocabulary from {min(sample.count(), sample.size)} sampled pairs: "
            f"{vocab.src_size} source / {vocab.tgt_size} target tokens",
            clock,
        )
    for name in ("train", "valid"):
        if name in splits:
            out = storage.join(directory, name)
            splits[name] = encode_split(splits[name], vocab, d.max_length, run_dir, out)
    clock = timed("encoded and wrote the prepared data", clock)
    staging = storage.join(run_dir, "staging")
    if storage.exists(staging):
        storage.delete_dir(staging)
    for name, split in splits.items():
        s = split.summary()
        print(
            f"[data] {name}: {s['read']} rows read, {s['used']} used, "
            f"rejected {s['rejected'] or 'none'}",
            flush=True,
        )
    vocab.save(storage.join(directory, VOCAB_DIR))
    manifest = {
        "version": VERSION,
        **what_it_was_made_from(cfg),
        "rejects": storage.join(run_dir, "rejects"),
        "splits": {
            name: {
                **split.summary(),
                "parts": [[_relative(p, directory), rows] for p, rows in split.parts],
            }
            for name, split in splits.items()
        },
    }
    write_manifest(directory, manifest)
    timed("prepared", t0)
    return manifest, directory, vocab


def _relative(path: str, directory: str) -> str:
    return path[len(directory) :].lstrip("/")


def run_train(cfg: Config, resume: bool = False) -> dict:
    started = time.perf_counter()
    check_shared_storage(cfg.storage_path)
    vocab = _check_run_dir(cfg, resume)
    manifest, directory, vocab = prepare_data(cfg, vocab)
    storage.makedirs(cfg.run_dir)
    storage.write_text(storage.join(cfg.run_dir, CONFIG_FILE), dump_config(cfg))
    vocab.save(storage.join(cfg.run_dir, VOCAB_DIR))
    data_summary = {
        name: {k: v for k, v in split.items() if k != "parts"}
        for name, split in manifest["splits"].items()
    }
    if directory != storage.join(cfg.run_dir, PREPARED_DIR):
        data_summary["prepared"] = directory
    storage.write_text(storage.join(cfg.run_dir, "data.json"), json.dumps(data_summary, indent=1))

    train = part_paths(directory, manifest, "train")
    valid = part_paths(directory, manifest, "valid") or None
    result = fit(cfg, vocab, train, valid)
    if result.error:
        raise result.error
    best_path, best_metrics = best_checkpoint(result)
    summary = {
        "run_dir": cfg.run_dir,
        "best_checkpoint": best_path,
        "best_valid_bleu": best_metrics.get("valid_bleu"),
        "best_step": best_metrics.get("step"),
        "test_bleu": None,
        "test_chrf": None,
    }

    if "test" in data_summary and data_summary["test"]["used"]:
        out = storage.join(cfg.run_dir, "test_translations.csv")
        options = BulkOptions(
            column=cfg.data.source_column,
            reference_column=cfg.data.target_column,
            num_actors=cfg.translate.num_actors or default_actors(cfg.scaling.use_gpu),
            use_gpu=cfg.scaling.use_gpu,
            batch_size=cfg.translate.batch_size,
            beam=cfg.translate.beam_size,
            progress=False,
        )
        res = bulk_translate(best_path, cfg.data.test, out, options)
        scores = res["scores"]
        summary.update(
            test_bleu=scores["bleu"],
            test_chrf=scores["chrf"],
            test_sentences=scores["sentences"],
            test_beam=cfg.translate.beam_size,
            bleu_signature=scores["bleu_signature"],
            chrf_signature=scores["chrf_signature"],
            test_translations=out,
        )
        print(
            f"[test] beam {cfg.translate.beam_size}: "
            f"BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  "
            f"({scores['sentences']} sentences, {scores['bleu_signature']})",
            flush=True,
        )
    summary["data"] = data_summary
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    storage.write_text(storage.join(cfg.run_dir, "summary.json"), json.dumps(summary, indent=1))
    return summary
