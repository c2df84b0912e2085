import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from job.config import ModelConfig
from job.corpus.vocab import BOS, EOS, PAD
from job.model import seq2seq
from job.model.device import Precision
from job.model.seq2seq import (
    LOSS_CHUNK_BYTES,
    LOSS_CHUNK_ROWS,
    LSTM,
    Dropout,
    build_model,
    count_parameters,
    linear_cross_entropy,
)

V = 50


def batch(lengths_src=(5, 3), lengths_tgt=(4, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    B, S, T = len(lengths_src), max(lengths_src), max(lengths_tgt) + 1
    src = torch.full((B, S), PAD)
    tgt_in = torch.full((B, T), PAD)
    tgt_out = torch.full((B, T), PAD)
    for i, (ls, lt) in enumerate(zip(lengths_src, lengths_tgt)):
        src[i, : ls - 1] = torch.randint(4, V, (ls - 1,), generator=g)
        src[i, ls - 1] = EOS
        body = torch.randint(4, V, (lt,), generator=g)
        tgt_in[i, 0] = BOS
        tgt_in[i, 1 : lt + 1] = body
        tgt_out[i, :lt] = body
        tgt_out[i, lt] = EOS
    return src, torch.tensor(lengths_src), tgt_in, tgt_out


def model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=16, hidden_size=24, **kw)
    return build_model(cfg, V, V).eval()


def test_feature_shapes_and_bidirectional_state():
    m = model(num_layers=2)
    src, src_len, tgt_in, _ = batch()
    enc_out, (h, c), _keys, mask = m.encode(src, src_len)
    assert enc_out.shape == (2, 5, 24)  # bidirectional: 2 x 12
    assert h.shape == c.shape == (2, 2, 24)
    assert mask.tolist()[1] == [True, True, True, False, False]
    assert m.features(src, src_len, tgt_in).shape == (2, 5, 16)  # tied: out dim = embedding dim


def test_encoder_ignores_padding_content():
    m = model()
    src, src_len, tgt_in, _tgt_out = batch()
    other = src.clone()
    other[1, 3:] = 7  # garbage where the mask says padding (lengths unchanged)
    a = m.features(src, src_len, tgt_in)
    b = m.features(other, src_len, tgt_in)
    assert torch.allclose(a, b, atol=1e-6)


def test_attention_gives_zero_weight_to_padding():
    m = model()
    src, src_len, tgt_in, _ = batch()
    enc_out, state, keys, mask = m.encode(src, src_len)
    dec_out, _ = m.decoder.lstm(m.decoder.embed(tgt_in), state)
    _, weights = m.decoder.attention(dec_out, keys, enc_out, mask)
    assert torch.all(weights[1, :, 3:] == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 5))


def test_loss_ignores_padding_and_counts_real_tokens():
    m = model()
    src, src_len, tgt_in, tgt_out = batch()
    loss, n = m(src, src_len, tgt_in, tgt_out)
    assert n == 5 + 3
    # Same pairs, padded further: loss and count unchanged.
    pad = torch.full((2, 3), PAD)
    loss2, n2 = m(src, src_len, torch.cat([tgt_in, pad], 1), torch.cat([tgt_out, pad], 1))
    assert n2 == n and torch.allclose(loss, loss2, atol=1e-5)
    # Each sentence alone: the batch loss is the sum.
    l0, _ = m(src[:1], src_len[:1], tgt_in[:1], tgt_out[:1])
    l1, _ = m(src[1:, :3], src_len[1:], tgt_in[1:, :3], tgt_out[1:, :3])
    assert torch.allclose(loss, l0 + l1, atol=1e-4)


def test_teacher_forcing_one_matches_per_step_loop():
    m = model()
    src, src_len, tgt_in, _ = batch()
    fast = m.features(src, src_len, tgt_in, teacher_forcing_ratio=1.0)
    slow = m.features(
        src, src_len, tgt_in, teacher_forcing_ratio=0.999999
    )  # per-step path, always forced
    assert torch.allclose(fast, slow, atol=1e-5)


def test_seed_architecture_without_attention():
    m = model(attention="none", bidirectional=False, tie_embeddings=False, share_embeddings=False)
    assert m.decoder.attention is None
    src, src_len, tgt_in, tgt_out = batch()
    assert m.features(src, src_len, tgt_in).shape == (2, 5, 24)
    loss, n = m(src, src_len, tgt_in, tgt_out, teacher_forcing_ratio=0.5)
    loss.backward()
    assert n == 8


def test_dropout_off_in_eval_and_shared_parameters_counted_once():
    m = model(dropout=0.5)
    src, src_len, tgt_in, _ = batch()
    assert torch.equal(m.features(src, src_len, tgt_in), m.features(src, src_len, tgt_in))
    assert m.encoder.embed is m.decoder.embed and m.decoder.out.weight is m.decoder.embed.weight
    assert count_parameters(m) < sum(p.numel() for p in m.state_dict().values())


def test_a_few_steps_reduce_the_loss():
    m = model(dropout=0.0).train()
    src, src_len, tgt_in, tgt_out = batch()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, n = m(src, src_len, tgt_in, tgt_out)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
        first = first if first is not None else loss.item() / n
    assert loss.item() / n < first / 2


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n", [1, LOSS_CHUNK_ROWS, 2 * LOSS_CHUNK_ROWS + 37])
def test_chunked_linear_cross_entropy_matches_torch(smoothing, n):
    """Loss and all three gradients equal F.linear + F.cross_entropy's, across chunk boundaries,
    including targets that repeat (their weight-gradient rows accumulate)."""
    g = torch.Generator().manual_seed(n)
    v, d = 301, 24
    x = torch.randn(n, d, generator=g, requires_grad=True)
    w = (torch.randn(v, d, generator=g) * 0.3).requires_grad_()
    b = torch.randn(v, generator=g).requires_grad_()
    target = torch.randint(0, 5, (n,), generator=g)  # few classes: many repeats
    expected = F.cross_entropy(
        F.linear(x, w, b), target, reduction="sum", label_smoothing=smoothing
    )
    (expected * 0.5).backward()
    want = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    got = linear_cross_entropy(x, w, b, target, smoothing)
    (got * 0.5).backward()
    assert torch.allclose(got, expected, rtol=1e-5)
    for name, a, e in zip("xwb", (x.grad, w.grad, b.grad), want):
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-4), name
    with torch.no_grad():  # inference takes the plain path: same value
        assert torch.allclose(linear_cross_entropy(x, w, b, target, smoothing), expected, rtol=1e-5)


def test_tied_output_layer_gradient_reaches_the_embedding():
    m = model(dropout=0.0).train()
    src, src_len, tgt_in, tgt_out = batch()
    loss, _ = m(src, src_len, tgt_in, tgt_out, label_smoothing=0.1)
    loss.backward()
    grad = m.decoder.embed.weight.grad.clone()
    m.zero_grad()
    # reference: the same loss through torch's own output layer and loss
    feats = m.features(src, src_len, tgt_in)
    mask = tgt_out != PAD
    F.cross_entropy(
        m.decoder.out(feats[mask]), tgt_out[mask], reduction="sum", label_smoothing=0.1
    ).backward()
    assert torch.allclose(grad, m.decoder.embed.weight.grad, atol=1e-5)


def test_dropout_keeps_the_expected_share_and_scales_it():
    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 65536 / (65536 - round(0.3 * 65536))))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient flows through kept units only, same scale
    assert abs(y.mean().item() - 1.0) < 0.01  # unbiased
    # Rows are not correlated with each other (16-bit lanes of one random word go to neighbours).
    assert abs(kept[:, 0].float().mean().item() - 0.7) < 0.05
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.3).train()(x), y)  # repeatable under torch.manual_seed
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)


def _out_dtype(out):
    out = out[0] if isinstance(out, tuple) else out
    return getattr(out, "data", out).dtype  # a PackedSequence's data


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
def test_training_forward_computes_in_the_precision_dtype(name):
    """LSTMs (packed encoder and decoder) and Linear layers in the policy's dtype, the loss in
    fp32 (CPU autocast on its own would run the packed LSTM in fp32)."""
    m = model(num_layers=2, dropout=0.1).train()
    seen = {}

    def record(module, args, out):
        seen.setdefault(module, _out_dtype(out))

    for module in m.modules():
        if isinstance(module, (torch.nn.LSTM, torch.nn.Linear)):
            module.register_forward_hook(record)
    src, src_len, tgt_in, tgt_out = batch()  # unequal source lengths: the packed path
    precision = Precision(name, "cpu")
    with precision.autocast():
        loss, n = m(src, src_len, tgt_in, tgt_out, 0.1)
    want = precision.dtype or torch.float32
    assert len(seen) == 4 and set(seen.values()) == {want}  # 2 LSTMs, key, combine
    assert loss.dtype == torch.float32 and n == 8


@pytest.mark.parametrize("packed", [False, True])
def test_lstm_under_autocast_is_close_to_fp32_and_trains_the_fp32_weights(packed):
    torch.manual_seed(0)
    lstm = LSTM(8, 6, 2, batch_first=True, bidirectional=True)
    x, h0 = torch.randn(3, 5, 8), (torch.randn(4, 3, 6), torch.randn(4, 3, 6))
    lengths = torch.tensor([5, 4, 2])
    results = []
    for precision in ("fp32", "bf16"):
        lstm.zero_grad()
        with Precision(precision, "cpu").autocast():
            inp = pack_padded_sequence(x, lengths, batch_first=True) if packed else x
            out, (h, c) = lstm(inp, h0)
        out = pad_packed_sequence(out, batch_first=True)[0] if packed else out
        want = Precision(precision, "cpu").dtype or torch.float32
        assert out.dtype == h.dtype == c.dtype == want
        (out.float().sum() + h.float().pow(2).sum() + c.float().sum()).backward()
        grads = [p.grad for p in lstm.parameters()]
        assert all(g is not None and g.dtype == torch.float32 for g in grads)
        results.append((out.float(), h.float(), c.float(), grads))
    (out, h, c, grads), (out16, h16, c16, grads16) = results
    for a, b in [(out, out16), (h, h16), (c, c16), *zip(grads, grads16)]:
        assert torch.allclose(a, b, atol=0.05, rtol=0.05)


def test_bf16_backward_gives_finite_fp32_gradients_close_to_fp32():
    m = model(num_layers=2, dropout=0.0).train()
    src, src_len, tgt_in, tgt_out = batch()
    grads = []
    for name in ("bf16", "fp32"):
        m.zero_grad()
        with Precision(name, "cpu").autocast():
            loss, n = m(src, src_len, tgt_in, tgt_out, 0.1)
        (loss / n).backward()
        for p in m.parameters():
            assert p.grad is not None and p.grad.dtype == torch.float32
            assert p.grad.isfinite().all()
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    assert (grads[0] - grads[1]).norm() < 0.05 * grads[1].norm()


def _loss_inputs(n, v=301, d=24, dtype=torch.float32):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=g) * 0.3).requires_grad_()
    b = torch.randn(v, generator=g).requires_grad_()
    return x, w, b, torch.randint(0, 5, (n,), generator=g)


def _loss_and_grads(fn, x, w, b, target):
    for t in (x, w, b):
        t.grad = None
    loss = fn(x, w, b, target)
    (loss * 0.5).backward()
    return loss, [t.grad for t in (x, w, b)]


def test_chunked_loss_any_chunk_rows_in_fp32():
    inputs = _loss_inputs(100)
    want, want_grads = _loss_and_grads(
        lambda x, w, b, t: F.cross_entropy(F.linear(x, w, b), t, reduction="sum"), *inputs
    )
    for rows in (1, 37, 100, 1000):
        got, grads = _loss_and_grads(
            lambda x, w, b, t, r=rows: linear_cross_entropy(x, w, b, t, rows=r), *inputs
        )
        assert torch.allclose(got, want, rtol=1e-5)
        assert all(torch.allclose(a, e, atol=1e-5, rtol=1e-4) for a, e in zip(grads, want_grads))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_chunked_loss_under_bf16_autocast_matches_torch(smoothing):
    """Off the CPU fp32 path (here bf16 autocast, as on a GPU), above the size threshold: chunked,
    products in bf16, loss in fp32, gradients in the inputs' dtypes, close to fp32's."""
    inputs = _loss_inputs(2 * 37 + 5, dtype=torch.bfloat16)
    x, w, b, _ = inputs

    def plain(x, w, b, t):
        return F.cross_entropy(
            F.linear(x, w, b).float(), t, reduction="sum", label_smoothing=smoothing
        )

    def chunked(x, w, b, t):
        return linear_cross_entropy(x, w, b, t, smoothing, above=0, rows=37)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_grads = _loss_and_grads(chunked, *inputs)
        want, want_grads = _loss_and_grads(plain, *inputs)
    exact, exact_grads = _loss_and_grads(plain, x.detach().float().requires_grad_(), w, b, _)
    assert got.dtype == torch.float32
    assert [g.dtype for g in got_grads] == [torch.bfloat16, torch.float32, torch.float32]
    assert torch.allclose(got, want, rtol=1e-3) and torch.allclose(got, exact, rtol=1e-2)
    for a, e, f in zip(got_grads, want_grads, exact_grads):
        assert torch.allclose(a.float(), e.float(), atol=0.05, rtol=0.02)
        assert torch.allclose(a.float(), f, atol=0.1, rtol=0.05)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # loss only
        assert torch.allclose(chunked(x, w, b, inputs[3]), want, rtol=1e-3)


def test_chunked_loss_stays_off_small_batches_off_the_cpu_fp32_path(monkeypatch):
    calls = []
    monkeypatch.setattr(seq2seq._LinearCrossEntropy, "apply", lambda *a: calls.append(a))
    x, w, b, target = _loss_inputs(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear_cross_entropy(x, w, b, target)  # 8 x 301 is below LOSS_CHUNK_ABOVE: plain
        assert not calls
        linear_cross_entropy(x, w, b, target, above=8 * 301 - 1)
        assert calls[-1][5] == max(LOSS_CHUNK_ROWS, LOSS_CHUNK_BYTES // (4 * 301))


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_forward_with_target_positions_equals_the_masked_forward(name):
    m = model(num_layers=2, dropout=0.0).train()
    src, src_len, tgt_in, tgt_out = batch()
    positions = torch.nonzero(tgt_out.reshape(-1) != PAD).squeeze(1)
    results = []
    for pos in (None, positions):
        m.zero_grad()
        with Precision(name, "cpu").autocast():
            loss, n = m(src, src_len, tgt_in, tgt_out, 0.1, positions=pos)
        loss.backward()
        results.append((loss, n, [p.grad.clone() for p in m.parameters()]))
    (loss, n, grads), (loss2, n2, grads2) = results
    assert n == n2 == 8 and isinstance(n2, int) and torch.equal(loss, loss2)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2))
