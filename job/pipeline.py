"""The train command end to end, on the driver: corpus -> vocabulary -> DDP training -> test scores.

Run directory (storage_path/name/):
    config.yaml        the resolved config        vocab/          the shared vocabulary
    data.json          rows read/used/rejected    rejects/        rejected rows, by split
    metrics.jsonl      training + validation log  checkpoint_*/   Ray Train's checkpoints
    test_translations.csv, summary.json
"""

from __future__ import annotations

import json
import time

import yaml

from job import storage
from job.bulk import BulkOptions, bulk_translate, default_actors
from job.checkpoint import CONFIG_FILE, best_checkpoint
from job.config import Config, dump_config
from job.data import Split, classify, encode, iter_text_pairs, write_rejects
from job.errors import ConfigError, DataError
from job.runtime import LIGHT_TASK
from job.trainer import fit
from job.vocab import VOCAB_DIR, Vocabulary, build_vocab

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


def prepare_data(cfg: Config, vocab: Vocabulary | None) -> tuple[dict[str, Split], Vocabulary]:
    """Read and classify every split, build the vocabulary once (unless resuming), encode."""
    d = cfg.data
    t0 = time.perf_counter()
    splits = {"train": classify(d.train, "train", d.source_column, d.target_column)}
    for name in ("valid", "test"):
        path = getattr(d, name)
        if path:
            splits[name] = classify(path, name, d.source_column, d.target_column)
    if splits["train"].used == 0:
        raise DataError(
            f"{d.train}: no usable training rows ({splits['train'].summary()['rejected']})"
        )
    if vocab is None:
        vocab = build_vocab(cfg.vocab, iter_text_pairs(splits["train"].ok()))
        print(
            f"[data] built {vocab.kind} vocabulary: "
            f"{vocab.src_size} source / {vocab.tgt_size} target tokens",
            flush=True,
        )
    for name in ("train", "valid"):
        if name in splits:
            splits[name] = encode(splits[name], vocab, d.max_length)
    for name, split in splits.items():
        write_rejects(split, storage.join(cfg.run_dir, "rejects", f"{name}.csv"))
        s = split.summary()
        print(
            f"[data] {name}: {s['read']} rows read, {s['used']} used, "
            f"rejected {s['rejected'] or 'none'}",
            flush=True,
        )
    print(f"[data] prepared in {time.perf_counter() - t0:.1f}s", flush=True)
    return splits, vocab


def run_train(cfg: Config, resume: bool = False) -> dict:
    started = time.perf_counter()
    vocab = _check_run_dir(cfg, resume)
    splits, vocab = prepare_data(cfg, vocab)
    storage.makedirs(cfg.run_dir)
    storage.write_text(storage.join(cfg.run_dir, CONFIG_FILE), dump_config(cfg))
    vocab.save(storage.join(cfg.run_dir, VOCAB_DIR))
    data_summary = {name: s.summary() for name, s in splits.items()}
    storage.write_text(storage.join(cfg.run_dir, "data.json"), json.dumps(data_summary, indent=1))

    train = (
        splits["train"]
        .ok()
        .select_columns(["src_ids", "tgt_ids"], **LIGHT_TASK)
        .random_shuffle(seed=cfg.train.seed)
        .materialize()
    )
    valid = None
    if "valid" in splits and splits["valid"].used:
        valid = (
            splits["valid"]
            .ok()
            .select_columns(["src_ids", "tgt_ids", "target"], **LIGHT_TASK)
            .materialize()
        )
    result = fit(cfg, vocab, train, valid, splits["train"].used)
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

    if "test" in splits and splits["test"].used:
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
