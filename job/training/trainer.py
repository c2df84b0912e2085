"""The driver side of training: the TorchTrainer that runs job.training.worker's loop on every
worker, with the run's scaling, checkpoint retention and failure policy, and the console
progress."""

from __future__ import annotations

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from job.config import Config
from job.corpus.vocab import Vocabulary
from job.metrics import ProgressPrinter
from job.training.worker import train_loop_per_worker


def fit(cfg: Config, vocab: Vocabulary, train_parts: list, valid_parts: list | None):
    """Run the TorchTrainer over the prepared data's parts ((path, rows) each; every worker
    reads its slice of each epoch itself, job.training.feeder); returns Ray Train's Result."""
    scaling = cfg.scaling
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "vocab_files": vocab.to_files(),
            "run_dir": cfg.run_dir,
            "train_parts": train_parts,
            "valid_parts": valid_parts or [],
        },
        scaling_config=ScalingConfig(
            num_workers=scaling.ray_num_workers(),
            use_gpu=scaling.use_gpu,
            elastic_resize_monitor_interval_s=scaling.elastic_resize_interval_s,
            resources_per_worker={
                "CPU": scaling.cpus_per_worker,
                **({"GPU": 1} if scaling.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute="valid_bleu" if valid_parts else None,
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
        ),
    )
    printer = ProgressPrinter(cfg.run_dir, cfg.train.epochs)
    printer.start()
    try:
        return trainer.fit()
    finally:
        printer.stop()
