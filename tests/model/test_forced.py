"""Forced decoding (job.model.forced): a translation's reported score is its log-probability, and
scores do not depend on batching."""

import pytest
import torch

from job.config import ModelConfig
from job.model.forced import force_decode
from job.model.sampling import Sampling
from job.model.search import decode_ids
from job.model.seq2seq import build_model

SOURCES = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16, 17, 18] * 3, [19, 20]] * 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(embedding_dim=16, hidden_size=16, dropout=0.0), 30, 30).eval()


@pytest.mark.parametrize("how", ["greedy", "beam", "sampling"])
def test_decoded_scores_are_the_forced_log_probabilities(model, how):
    kw = {"batch_size": 4, "max_src_len": 10, "max_length_ratio": 1.5}
    if how == "beam":
        kw["beam"] = 4
    if how == "sampling":
        kw["sampling"] = Sampling("topp", 0.9, seed=5)
    decoded = decode_ids(model, SOURCES, **kw)
    forced = force_decode(model, SOURCES, decoded.ids, max_src_len=10, batch_tokens=60)
    assert forced.scores == pytest.approx(decoded.scores, abs=1e-4)
    assert forced.truncated == decoded.truncated == [len(s) + 1 > 10 for s in SOURCES]
    assert forced.tokens == [len(ids) + 1 for ids in decoded.ids]


def test_scores_do_not_depend_on_the_batch(model):
    targets = [[5, 6], [7], [8, 9, 10, 11], [12, 13, 14], [15]] * 4
    one = force_decode(model, SOURCES, targets, max_src_len=64, batch_tokens=1)
    many = force_decode(model, SOURCES, targets, max_src_len=64, batch_tokens=10_000)
    assert one.scores == pytest.approx(many.scores, abs=1e-5)
    assert all(s < 0 for s in one.scores)


def test_alignments_give_one_source_position_per_target_token(model):
    decoded = decode_ids(model, SOURCES, batch_size=8, max_src_len=64, max_length_ratio=1.5)
    forced = force_decode(model, SOURCES, decoded.ids, max_src_len=64, alignments=True)
    for src, ids, where in zip(SOURCES, decoded.ids, forced.alignments):
        assert len(where) == len(ids)
        assert all(0 <= w <= len(src) for w in where)  # a source token, or its EOS


def test_nbest_lists_are_ranked_and_start_with_the_best(model):
    decoded = decode_ids(
        model, SOURCES, batch_size=8, max_src_len=64, max_length_ratio=1.5, beam=4, nbest=3
    )
    for ids, score, hyps in zip(decoded.ids, decoded.scores, decoded.nbest):
        assert 1 <= len(hyps) <= 3
        assert hyps[0] == (ids, pytest.approx(score))
        forced = force_decode(model, [SOURCES[0]] * len(hyps), [h for h, _ in hyps], max_src_len=64)
        assert len({tuple(h) for h, _ in hyps}) == len(hyps)  # distinct hypotheses
    # every n-best score is its hypothesis' log-probability too
    src, hyps = SOURCES[1], decoded.nbest[1]
    forced = force_decode(model, [src] * len(hyps), [h for h, _ in hyps], max_src_len=64)
    assert forced.scores == pytest.approx([s for _, s in hyps], abs=1e-4)


def test_token_budget_batches_decode_like_sentence_batches(model):
    a = decode_ids(model, SOURCES, batch_size=3, max_src_len=64, max_length_ratio=1.5)
    b = decode_ids(
        model, SOURCES, batch_size=3, batch_tokens=20, max_src_len=64, max_length_ratio=1.5
    )
    assert a.ids == b.ids and a.scores == pytest.approx(b.scores, abs=1e-4)


def test_samples_do_not_depend_on_the_batch(model):
    s = Sampling("topk", 10, seed=3)
    keys = [f"row{i}" for i in range(len(SOURCES))]
    one = decode_ids(
        model, SOURCES, batch_size=1, max_src_len=64, max_length_ratio=1.5, sampling=s, keys=keys
    )
    all_ = decode_ids(
        model, SOURCES, batch_size=20, max_src_len=64, max_length_ratio=1.5, sampling=s, keys=keys
    )
    assert one.ids == all_.ids
    other = decode_ids(model, SOURCES, batch_size=20, max_src_len=64, max_length_ratio=1.5,
                       sampling=Sampling("topk", 10, seed=4), keys=keys)  # fmt: skip
    assert other.ids != one.ids
