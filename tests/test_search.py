import torch

from job.config import ModelConfig
from job.model import build_model
from job.search import decode_ids, greedy
from job.vocab import EOS, PAD


def test_greedy_respects_max_len_and_batches_match_single_sentences():
    torch.manual_seed(0)
    m = build_model(ModelConfig(embedding_dim=16, hidden_size=16), 30, 30).eval()
    sources = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14]]
    batched = decode_ids(m, sources, batch_size=4, max_src_len=64, max_length_ratio=1.0)
    single = [decode_ids(m, [s], batch_size=1, max_src_len=64, max_length_ratio=1.0) for s in sources]
    assert batched.ids == [s.ids[0] for s in single]
    for a, s in zip(batched.scores, single):
        assert abs(a - s.scores[0]) < 1e-4
    for src, out in zip(sources, batched.ids):
        assert len(out) <= (len(src) + 1) * 1.0 + 10
        assert EOS not in out and PAD not in out


def test_long_sources_are_truncated_and_flagged():
    torch.manual_seed(0)
    m = build_model(ModelConfig(embedding_dim=16, hidden_size=16), 30, 30).eval()
    out = decode_ids(m, [list(range(4, 30)) * 4, [5]], batch_size=8, max_src_len=16, max_length_ratio=2.0)
    assert out.truncated == [True, False]


def test_greedy_score_is_sum_of_token_log_probs():
    torch.manual_seed(1)
    m = build_model(ModelConfig(embedding_dim=16, hidden_size=16, dropout=0.0), 30, 30).eval()
    src = torch.tensor([[5, 6, 7, EOS]])
    tokens, score, attn = greedy(m, src, torch.tensor([4]), torch.tensor([6]))
    out = tokens[0][tokens[0] != PAD].tolist()
    tgt_in = torch.tensor([[2] + out])
    tgt_out = torch.tensor([out + [EOS]])
    loss, _ = m(src, torch.tensor([4]), tgt_in, tgt_out)
    assert abs(-loss.item() - score.item()) < 1e-3
    assert attn.shape[0] == 1 and attn.shape[2] == 4
