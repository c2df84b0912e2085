import numpy as np

from job.batching import bucket, chunk_batches, pad
from job.vocab import BOS, EOS, PAD


def flat(lists):
    offs = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offs[1:])
    vals = np.concatenate([np.asarray(x, np.int64) for x in lists]) if lists else np.zeros(0, np.int64)
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
