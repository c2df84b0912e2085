"""Sampled decoding (job.model.sampling): per-row reproducible streams, top-k / top-p supports."""

import math

import pytest
import torch

from job.errors import ConfigError
from job.model.sampling import Sampling


def test_parse_specs_and_refuse_bad_ones():
    assert Sampling.parse("topk:10", 0.7, 3) == Sampling("topk", 10.0, 0.7, 3)
    assert Sampling.parse("topp:0.9").value == 0.9
    for bad in ("topk:0", "topk:2.5", "topp:0", "topp:1.5", "top:3", "topk", "topp:x"):
        with pytest.raises(ConfigError, match="--sampling"):
            Sampling.parse(bad)
    with pytest.raises(ConfigError, match="--temperature"):
        Sampling.parse("topk:5", temperature=0)


def test_a_rows_stream_depends_on_the_seed_and_its_key_only():
    s = Sampling("topk", 5, seed=1)
    alone = s.uniforms(["0:7"], 6)
    among = s.uniforms(["0:3", "0:7", "1:0"], 6)
    assert torch.equal(alone[0], among[1])
    assert not torch.equal(among[0], among[1])
    assert not torch.equal(Sampling("topk", 5, seed=2).uniforms(["0:7"], 6), alone)
    assert float(among.min()) >= 0 and float(among.max()) < 1


def test_topk_draws_only_among_the_k_best_and_never_a_forbidden_token():
    logp = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.5, 0.1, -1.0]]), dim=-1)
    logp[0, 0] = -math.inf  # forbidden (like PAD)
    s = Sampling("topk", 2)
    drawn = {int(s.choose(logp, torch.tensor([u / 50]))) for u in range(50)}
    assert drawn == {1, 2}


def test_topp_keeps_the_nucleus_and_tiny_p_is_greedy():
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    nucleus = {int(Sampling("topp", 0.7).choose(logp, torch.tensor([u / 40]))) for u in range(40)}
    assert nucleus == {0, 1}  # 0.5 + 0.3 >= 0.7: the third token is out
    assert {
        int(Sampling("topp", 1e-6).choose(logp, torch.tensor([u / 10]))) for u in range(10)
    } == {0}


def test_inverse_cdf_follows_the_probabilities():
    logp = torch.log(torch.tensor([[0.25, 0.75]]))
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    picks = Sampling("topk", 2).choose(logp.expand(4000, 2), u)
    assert 0.7 < float(picks.float().mean()) < 0.8
    cold = Sampling("topk", 2, temperature=0.05).choose(logp.expand(4000, 2), u)
    assert float(cold.float().mean()) > 0.99  # a low temperature approaches greedy
