"""The training loop's plain-PyTorch parts (job.train): counters, schedule, one step, clock."""

import math

import numpy as np
import pytest
import torch

from job.batching import chunk_batches, flatten
from job.config import ModelConfig, TrainConfig
from job.model import build_model
from job.train import Clock, TrainStats, Window, lr_factor, train_step


def test_stats_round_trip_and_ignore_unknown_keys():
    stats = TrainStats(step=12, epoch=1, elapsed_s=3.5, src_tokens=100, tgt_tokens=90)
    stats.record_validation(20.0)
    again = TrainStats()
    again.load_state_dict({**stats.state_dict(), "metrics": {"valid_bleu": 20.0}})
    assert again == stats


def test_validations_since_the_best_count_up_and_reset():
    stats = TrainStats()
    for bleu in (10.0, 9.0, 10.0, 12.0, None):
        stats.record_validation(bleu)
    assert (stats.best_valid_bleu, stats.since_best) == (12.0, 1)


def test_old_checkpoint_state_without_since_best_loads():
    stats = TrainStats()
    stats.load_state_dict(
        {
            "step": 5,
            "epoch": 1,
            "elapsed_s": 1.0,
            "src_tokens": 1,
            "tgt_tokens": 1,
            "best_valid_bleu": None,
        }
    )
    assert (stats.step, stats.since_best) == (5, 0)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_warms_up_then_decays_to_the_floor(schedule):
    cfg = TrainConfig(warmup_steps=10, lr_schedule=schedule, min_lr_ratio=0.1)
    assert lr_factor(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 0.0) == pytest.approx(1.0)
    end = lr_factor(cfg, 1000, 1.0)
    assert end == pytest.approx(1.0 if schedule == "constant" else 0.1)
    assert lr_factor(cfg, 1000, 2.0) == end  # progress is clipped to [0, 1]
    if schedule == "cosine":
        assert lr_factor(cfg, 1000, 0.5) == pytest.approx(0.55)


def test_train_step_lowers_the_loss_of_a_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding_dim=16, hidden_size=16, dropout=0.0), 20, 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    src = [list(rng.integers(4, 20, size=5)) for _ in range(8)]
    sv, so = flatten(src)
    batch = next(iter(chunk_batches(sv, so, sv, so, 1000, rng)))
    cfg = TrainConfig(label_smoothing=0.0)
    first, n = train_step(model, optimizer, batch, cfg, "cpu")
    for _ in range(30):
        last, _ = train_step(model, optimizer, batch, cfg, "cpu")
    assert n == 8 * 6 and not first.requires_grad
    assert float(last) < 0.7 * float(first)


def test_clock_adds_the_time_before_a_restart():
    assert Clock(None, 0.0).budget_s == math.inf
    clock = Clock(2, 100.0)
    assert clock.budget_s == 120 and 100.0 <= clock.elapsed() < 110.0


def test_window_sums_and_resets():
    from job.batching import Batch

    w = Window()
    b = Batch(
        torch.zeros(1, 1),
        torch.ones(1),
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        src_tokens=3,
        tgt_tokens=4,
    )
    w.add(torch.tensor(2.5), 4, b)
    w.add(torch.tensor(1.5), 4, b)
    assert (w.loss, w.tokens, w.src, w.tgt) == (4.0, 8, 6, 8)
    w.reset()
    assert (w.loss, w.tokens, w.src, w.tgt) == (0.0, 0.0, 0.0, 0.0)
