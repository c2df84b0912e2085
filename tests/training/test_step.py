"""One optimizer step and its parts (job.training.step): counters, schedule, accumulation,
precision, clock, loss window. Plain PyTorch on CPU."""

import math

import numpy as np
import pytest
import torch

from job.config import ModelConfig, TrainConfig
from job.model.batching import chunk_batches, flatten
from job.model.device import Precision
from job.model.seq2seq import build_model
from job.training.step import (
    Clock,
    TrainStats,
    Window,
    empty_batch,
    lr_factor,
    micro_batches,
    train_step,
)


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
        {"step": 5, "epoch": 1, "elapsed_s": 1.0, "src_tokens": 1, "tgt_tokens": 1,
         "best_valid_bleu": None}
    )  # fmt: skip
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


def test_micro_batches_keep_the_global_batch_for_any_worker_count():
    assert micro_batches(TrainConfig(batch_tokens=1000), 4) == 1
    cfg = TrainConfig(batch_tokens=1000, global_batch_tokens=8000)
    assert [micro_batches(cfg, w) for w in (1, 2, 3, 4, 8, 16)] == [8, 4, 3, 2, 1, 1]


def tiny_model_and_batches(n_batches=1, seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(embedding_dim=16, hidden_size=16, dropout=0.0), 20, 20)
    rng = np.random.default_rng(seed)
    src = [list(rng.integers(4, 20, size=5)) for _ in range(8 * n_batches)]
    sv, so = flatten(src)
    return model, list(chunk_batches(sv, so, sv, so, 8 * 12, rng))


def test_train_step_lowers_the_loss_of_a_batch():
    model, (batch,) = tiny_model_and_batches()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = TrainConfig(label_smoothing=0.0)
    fp32 = Precision("fp32", "cpu")
    weight = 1.0 / batch.tgt_tokens
    first = train_step(model, optimizer, [batch], cfg, "cpu", fp32, weight)
    for _ in range(30):
        last = train_step(model, optimizer, [batch], cfg, "cpu", fp32, weight)
    assert batch.tgt_tokens == 8 * 6 and not first.requires_grad
    assert float(last) < 0.7 * float(first)


def test_accumulated_micro_batches_give_the_gradient_of_their_union():
    """Two micro-batches at weight 1/(their tokens) in one step: the gradient is the sum of the
    two batches' gradients at that weight (what a single batch of both would give)."""
    cfg = TrainConfig(label_smoothing=0.0, clip_norm=1e9)
    fp32 = Precision("fp32", "cpu")
    _, batches = tiny_model_and_batches(n_batches=2)
    assert len(batches) == 2
    weight = 1.0 / sum(b.tgt_tokens for b in batches)

    def grads(micro_steps):
        model, _ = tiny_model_and_batches(n_batches=2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay put
        total = {}
        for micro in micro_steps:
            train_step(model, optimizer, micro, cfg, "cpu", fp32, weight)
            for k, p in model.named_parameters():
                total[k] = total.get(k, 0) + p.grad
        return total

    together, apart = grads([batches]), grads([[b] for b in batches])
    for k in together:
        torch.testing.assert_close(together[k], apart[k], rtol=1e-4, atol=1e-6)


def test_an_empty_batch_at_weight_zero_leaves_the_weights_alone():
    model, _ = tiny_model_and_batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    empty = empty_batch()
    assert (empty.src_tokens, empty.tgt_tokens) == (1, 1)
    loss = train_step(
        model, optimizer, [empty], TrainConfig(), "cpu", Precision("fp32", "cpu"), 0.0
    )
    assert math.isfinite(float(loss))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_a_low_precision_step_keeps_fp32_weights_and_trains(name):
    model, (batch,) = tiny_model_and_batches()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    precision = Precision(name, "cpu")
    scaler = precision.grad_scaler()
    cfg = TrainConfig(label_smoothing=0.0)
    weight = 1.0 / batch.tgt_tokens
    first = train_step(model, optimizer, [batch], cfg, "cpu", precision, weight, scaler)
    for _ in range(30):
        last = train_step(model, optimizer, [batch], cfg, "cpu", precision, weight, scaler)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert float(last) < 0.8 * float(first)
    if name == "fp16":
        assert scaler is not None and scaler.get_scale() > 0


def test_clock_adds_the_time_before_a_restart():
    assert Clock(None, 0.0).budget_s == math.inf
    clock = Clock(2, 100.0)
    assert clock.budget_s == 120 and 100.0 <= clock.elapsed() < 110.0


def test_window_sums_and_resets():
    w = Window()
    b = empty_batch()
    w.add(torch.tensor(2.5), [b, b])
    w.add(torch.tensor(1.5), [b])
    assert (w.loss_sum(), w.tokens, w.src, w.tgt) == (4.0, 3, 3, 3)
    w.reset()
    assert (w.loss_sum(), w.tokens, w.src, w.tgt) == (0.0, 0.0, 0.0, 0.0)
