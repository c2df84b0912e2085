"""The driver side of training: the TorchTrainer that runs job.train's loop on every worker,
with the run's scaling, checkpoint retention and failure policy, and the console progress."""

from __future__ import annotations

import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from job.config import Config
from job.metrics import ProgressPrinter
from job.train import train_loop_per_worker
from job.vocab import Vocabulary


def fit(cfg: Config, vocab: Vocabulary, train_ds, valid_ds, train_rows: int):
    """Run the TorchTrainer; returns Ray Train's Result."""
    datasets = {"train": train_ds}
    if valid_ds is not None:
        datasets["valid"] = valid_ds
    scaling = cfg.scaling
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "vocab_files": vocab.to_files(),
            "run_dir": cfg.run_dir,
            "train_rows": train_rows,
            "has_valid": valid_ds is not None,
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
        datasets=datasets,
        # validation is not split: each worker takes its share of every row (job.feeder)
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute="valid_bleu" if valid_ds is not None else None,
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
