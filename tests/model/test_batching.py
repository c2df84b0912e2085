import numpy as np
import torch

from job.corpus.vocab import BOS, EOS, PAD
from job.model.batching import (
    batch_cost,
    bucket,
    chunk_batches,
    cost_matched_order,
    make_batch,
    pad,
)


def flat(lists):
    offs = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offs[1:])
    vals = (
        np.concatenate([np.asarray(x, np.int64) for x in lists]) if lists else np.zeros(0, np.int64)
    )
    return vals, offs


def test_pad_adds_bos_eos_and_padding():
    vals, offs = flat([[5, 6, 7], [8]])
    out, lens = pad(vals, offs, np.array([1, 0]), bos=True, eos=True)
    assert out.tolist() == [[BOS, 8, EOS, PAD, PAD], [BOS, 5, 6, 7, EOS]]
    assert lens.tolist() == [3, 5]


def test_bucket_respects_budget_covers_every_row_once():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 40, 1000)
    tgt = rng.integers(1, 40, 1000)
    batches = bucket(src, tgt, 400, rng)
    seen = np.sort(np.concatenate(batches))
    assert seen.tolist() == list(range(1000))
    for b in batches:
        assert len(b) == 1 or len(b) * (src[b].max() + tgt[b].max()) <= 400


def test_length_bucketing_keeps_padding_small():
    rng = np.random.default_rng(1)
    lists_s = [list(range(4, 4 + n)) for n in rng.integers(1, 60, 2000)]
    lists_t = [list(range(4, 4 + n)) for n in rng.integers(1, 60, 2000)]
    sv, so = flat(lists_s)
    tv, to = flat(lists_t)
    real = padded = 0
    for b in chunk_batches(sv, so, tv, to, 2000, rng):
        real += b.src_tokens
        padded += b.src.numel()
    assert real / padded > 0.9


def _rank_costs(rank: int, n_rows: int) -> np.ndarray:
    """Batch costs of one DDP rank's shard: its own rows, the same length distribution."""
    rng = np.random.default_rng([5, rank])
    src = np.clip(rng.lognormal(2.2, 0.6, n_rows), 1, 120).astype(
        int
    )  # sentence lengths: skewed, long tail
    tgt = np.clip(src * rng.uniform(0.8, 1.4, n_rows), 1, 120).astype(int)
    return np.array([batch_cost(src, tgt, b) for b in bucket(src, tgt, 2000, rng)], dtype=float)


def test_cost_matched_order_pairs_similar_batches_across_ranks():
    costs = [
        _rank_costs(0, 20_000),
        _rank_costs(1, 20_400),
    ]  # different shards, different batch counts
    orders = [
        cost_matched_order(c, np.random.default_rng([9, 0]), np.random.default_rng([9, r]))
        for r, c in enumerate(costs)
    ]
    for c, o in zip(costs, orders):
        assert sorted(o.tolist()) == list(range(len(c)))  # a permutation: every batch once
    steps = min(map(len, orders))
    matched = [c[o][:steps] for c, o in zip(costs, orders)]
    shuffled = [
        c[np.random.default_rng(r).permutation(len(c))][:steps] for r, c in enumerate(costs)
    ]

    def waiting(pair):  # DDP: each step lasts as long as the costlier batch
        return np.maximum(*pair).sum() / np.mean(pair, axis=0).sum() - 1

    assert waiting(matched) < waiting(shuffled) / 3
    # Still a random order: not sorted by cost, and another epoch (shared seed) gives another one.
    assert abs(np.corrcoef(np.arange(steps), matched[0])[0, 1]) < 0.3
    again = cost_matched_order(
        costs[0], np.random.default_rng([9, 1]), np.random.default_rng([9, 0])
    )
    assert not np.array_equal(again, orders[0])


def test_cost_matched_order_small_and_empty():
    assert (
        cost_matched_order(np.zeros(0), np.random.default_rng(0), np.random.default_rng(0)).tolist()
        == []
    )
    out = cost_matched_order(
        np.array([3.0, 1.0, 2.0]), np.random.default_rng(0), np.random.default_rng(1)
    )
    assert sorted(out.tolist()) == [0, 1, 2]


def test_target_positions_are_the_real_tokens_of_tgt_out():
    vals, offs = flat([[5, 6, 7], [8], []])
    b = make_batch(vals, offs, vals, offs, np.array([1, 0, 2]))
    flat_out = b.tgt_out.reshape(-1)
    assert b.tgt_positions.dtype == torch.int64
    assert torch.equal(b.tgt_positions, torch.nonzero(flat_out != PAD).squeeze(1))
    assert flat_out[b.tgt_positions].tolist() == [8, EOS, 5, 6, 7, EOS, EOS]
    assert len(b.tgt_positions) == b.tgt_tokens


def test_batch_to_moves_everything_but_the_source_lengths():
    vals, offs = flat([[5, 6, 7], [8]])
    b = make_batch(vals, offs, vals, offs, np.array([0, 1]))
    assert b.to("cpu") is b and b.to(torch.device("cpu")) is b
    moved = b.to("meta")  # a device without CUDA's pinned copies: a plain .to()
    for t in (moved.src, moved.tgt_in, moved.tgt_out, moved.tgt_positions):
        assert t.device.type == "meta"
    assert moved.src_len is b.src_len and (moved.src_tokens, moved.tgt_tokens) == (6, 6)
