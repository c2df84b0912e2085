import torch

from job.config import ModelConfig
from job.corpus.vocab import EOS, PAD
from job.model.search import decode_ids, greedy
from job.model.seq2seq import build_model


def test_greedy_respects_max_len_and_batches_match_single_sentences():
    torch.manual_seed(0)
    m = build_model(ModelConfig(embedding_dim=16, hidden_size=16), 30, 30).eval()
    sources = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14]]
    batched = decode_ids(m, sources, batch_size=4, max_src_len=64, max_length_ratio=1.0)
    single = [
        decode_ids(m, [s], batch_size=1, max_src_len=64, max_length_ratio=1.0) for s in sources
    ]
    assert batched.ids == [s.ids[0] for s in single]
    for a, s in zip(batched.scores, single):
        assert abs(a - s.scores[0]) < 1e-4
    for src, out in zip(sources, batched.ids):
        assert len(out) <= (len(src) + 1) * 1.0 + 10
        assert EOS not in out and PAD not in out


def test_long_sources_are_truncated_and_flagged():
    torch.manual_seed(0)
    m = build_model(ModelConfig(embedding_dim=16, hidden_size=16), 30, 30).eval()
    out = decode_ids(
        m, [list(range(4, 30)) * 4, [5]], batch_size=8, max_src_len=16, max_length_ratio=2.0
    )
    assert out.truncated == [True, False]


def test_greedy_score_is_sum_of_token_log_probs():
    torch.manual_seed(1)
    m = build_model(ModelConfig(embedding_dim=16, hidden_size=16, dropout=0.0), 30, 30).eval()
    src = torch.tensor([[5, 6, 7, EOS]])
    tokens, score, attn = greedy(m, src, torch.tensor([4]), torch.tensor([6]))
    out = tokens[0][tokens[0] != PAD].tolist()
    tgt_in = torch.tensor([[2, *out]])
    tgt_out = torch.tensor([[*out, EOS]])
    loss, _ = m(src, torch.tensor([4]), tgt_in, tgt_out)
    assert abs(-loss.item() - score.item()) < 1e-3
    assert attn.shape[0] == 1 and attn.shape[2] == 4


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(embedding_dim=16, hidden_size=16, dropout=0.0), 30, 30).eval()


def _batch(sources):
    import numpy as np

    from job.model.batching import pad

    lens = np.array([len(s) for s in sources])
    offs = np.concatenate([[0], np.cumsum(lens)])
    vals = np.concatenate([np.asarray(s) for s in sources])
    src, src_len = pad(vals, offs, np.arange(len(sources)), bos=False, eos=True)
    return torch.from_numpy(src), torch.from_numpy(src_len)


SOURCES = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14], [15, 16, 17, 18, 19, 20]]


def test_beam_one_is_exactly_greedy():
    from job.model.search import beam_search

    for seed in range(3):
        m = _model(seed)
        src, src_len = _batch(SOURCES)
        max_len = src_len * 2 + 3
        g_tok, g_score, _ = greedy(m, src, src_len, max_len)
        b_tok, b_score, _ = beam_search(m, src, src_len, max_len, beam=1)
        width = max(g_tok.size(1), b_tok.size(1))

        def padded(t, width=width):
            return torch.nn.functional.pad(t, (0, width - t.size(1)), value=PAD)

        assert torch.equal(padded(g_tok), padded(b_tok))
        assert torch.allclose(g_score, b_score, atol=1e-5)


def test_beam_batched_equals_one_by_one_and_scores_are_log_probs():
    from job.model.search import beam_search

    m = _model(4)
    src, src_len = _batch(SOURCES)
    max_len = src_len + 6
    toks, scores, _ = beam_search(m, src, src_len, max_len, beam=4)
    for i, s in enumerate(SOURCES):
        one_src, one_len = _batch([s])
        t1, s1, _ = beam_search(m, one_src, one_len, max_len[i : i + 1], beam=4)
        a = toks[i][toks[i] != PAD].tolist()
        assert a == t1[0][t1[0] != PAD].tolist()
        assert abs(scores[i].item() - s1.item()) < 1e-4
        assert len(a) <= max_len[i].item()
        loss, _ = m(one_src, one_len, torch.tensor([[2, *a]]), torch.tensor([[*a, EOS]]))
        assert abs(-loss.item() - scores[i].item()) < 1e-3


def test_wider_beam_finds_at_least_as_likely_outputs_without_length_penalty():
    from job.model.search import beam_search

    m = _model(5)
    src, src_len = _batch(SOURCES)
    max_len = src_len + 6
    _, s1, _ = beam_search(m, src, src_len, max_len, beam=1, length_penalty=0.0)
    _, s5, _ = beam_search(m, src, src_len, max_len, beam=5, length_penalty=0.0)
    assert torch.all(s5 >= s1 - 1e-5)
