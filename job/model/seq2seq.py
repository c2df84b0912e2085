"""LSTM encoder-decoder, plain PyTorch (no Ray here).

The seed's architecture made correct: embeddings in front of the LSTMs, packed padded source
sequences, padding ignored in the loss. On top of it, Luong-style global attention (the default):
the decoder LSTM runs over the whole target prefix in one call, then every decoder state attends
over the encoder outputs with padded source positions masked. `attention: none` is the seed's
plain encoder-decoder (final encoder state initialises the decoder, output = Linear(decoder state)).

Shapes: B batch, S source length, T target length, H hidden size, E embedding size, V vocabulary.

Two training kernels live here too, both plain PyTorch ops (CPU numbers in BENCHMARKS.md):
`linear_cross_entropy` (output layer + loss + their gradients, chunk by chunk, so the (N, V)
logits never exist whole) and `Dropout` (CPU masks from raw random bits). `LSTM` keeps autocast's
dtype. The training forward with target positions never makes the host wait for the device.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from job.config import ModelConfig
from job.corpus.vocab import PAD
from job.errors import ConfigError
from job.model.device import to_device

LOSS_CHUNK_ROWS = 128  # rows of logits per chunk: 128 x V floats stay in a core's L2 for V <= ~8k
LOSS_CHUNK_BYTES = 128 << 20  # off the CPU fp32 path: fp32 logits per chunk (1024 rows at V = 32k)
LOSS_CHUNK_ABOVE = 1 << 22  # off the CPU fp32 path: tokens x V above which the loss is chunked


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(x_i W^T + b, target_i) with label smoothing, and its gradients, in one pass.

    The forward computes the loss and the gradients for x, W and b chunk by chunk (logits,
    log-softmax and softmax of a chunk stay in cache); backward only scales them. Against
    F.linear + F.cross_entropy this never writes the (N, V) logits, log-probabilities and
    their gradient to memory: on CPU the output layer + loss runs 1.3-1.7x faster with the
    same three matrix products (bench numbers in BENCHMARKS.md). Products run in `dtype`, the
    softmax and sums in fp32; gradients come in x's, W's and b's dtypes (none without `grads`).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, target, smoothing: float, rows: int, dtype, grads: bool):
        n, v = x.size(0), weight.size(0)
        w, b = weight.to(dtype), bias.to(dtype)  # no-ops in fp32
        grad_x = x.new_empty(x.shape, dtype=dtype) if grads else None
        grad_w, grad_b = torch.zeros_like(weight), torch.zeros_like(bias)
        rows = min(rows, max(n, 1))
        logits = x.new_empty(rows, v, dtype=dtype)
        arange = torch.arange(rows, device=x.device)
        loss = x.new_zeros((), dtype=torch.float32)
        for start in range(0, n, rows):
            xc, tc = x[start : start + rows].to(dtype), target[start : start + rows]
            c = xc.size(0)
            z = torch.addmm(b, xc, w.t(), out=logits[:c])
            logp = torch.log_softmax(z, dim=1, dtype=torch.float32)
            # Label smoothing as F.cross_entropy: (1 - eps) * NLL(target) + eps * mean_j NLL(j).
            nll = logp.gather(1, tc.unsqueeze(1)).sum() * (1.0 - smoothing)
            if smoothing:
                nll = nll + logp.mean(1).sum() * smoothing
            loss -= nll
            if not grads:
                continue
            # d loss / d z = softmax - (eps / V) - (1 - eps) * onehot(target)
            grad_z = logp.exp_()
            if smoothing:
                grad_z.sub_(smoothing / v)
            grad_z[arange[:c], tc] -= 1.0 - smoothing
            gz = grad_z.to(dtype)
            torch.mm(gz, w, out=grad_x[start : start + c])
            if grad_w.dtype == dtype:
                grad_w.addmm_(gz.t(), xc)
            else:  # a chunk's product in `dtype`, summed over chunks in W's dtype
                grad_w += torch.mm(gz.t(), xc)
            grad_b += grad_z.sum(0)
        ctx.save_for_backward(grad_x.to(x.dtype) if grads else None, grad_w, grad_b)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        scaled = (g.mul_(grad_loss) for g in (grad_x, grad_w, grad_b))
        return (*scaled, None, None, None, None, None)


def linear_cross_entropy(
    x, weight, bias, target, smoothing: float = 0.0, *, above: int = LOSS_CHUNK_ABOVE, rows=None
) -> torch.Tensor:
    """Summed cross-entropy of the logits x W^T + b against target (N,), without padding rows.

    Training on CPU in fp32 always takes the chunked kernel above, LOSS_CHUNK_ROWS a chunk; the
    rest (GPU, autocast, inference) when N x V > `above`, LOSS_CHUNK_BYTES of fp32 logits a
    chunk (or `rows`), and else (and CPU fp32 inference) the plain F.linear + F.cross_entropy.
    """
    kind = x.device.type
    autocasting = torch.is_autocast_enabled(kind)
    dtype = torch.get_autocast_dtype(kind) if autocasting else x.dtype
    cpu_fp32 = kind == "cpu" and dtype == x.dtype == weight.dtype == torch.float32
    if cpu_fp32 and torch.is_grad_enabled():
        rows = rows or LOSS_CHUNK_ROWS
    elif not cpu_fp32 and x.size(0) * weight.size(0) > above:
        rows = rows or max(LOSS_CHUNK_ROWS, LOSS_CHUNK_BYTES // (4 * weight.size(0)))
    else:
        logits = F.linear(x, weight, bias)
        return F.cross_entropy(logits.float(), target, reduction="sum", label_smoothing=smoothing)
    grads = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias))
    with torch.autocast(kind, enabled=False) if autocasting else nullcontext():
        return _LinearCrossEntropy.apply(x, weight, bias, target, smoothing, rows, dtype, grads)


class LSTM(nn.LSTM):
    """nn.LSTM that runs in autocast's dtype under autocast.

    CUDA autocast runs cuDNN RNNs in fp16 whatever dtype it was asked for (aten/src/ATen/cudnn/
    AutocastRNN.cpp): under bf16 autocast the LSTMs would train in fp16 with no loss scaling.
    So under autocast this runs the LSTM with autocast off, input, state and weights cast to
    autocast's dtype by hand (the gradients flow back to the fp32 weights), outputs in that
    dtype. Without autocast it is nn.LSTM's own call.
    """

    @classmethod
    def of(cls, cfg: ModelConfig, hidden_size: int, bidirectional: bool = False) -> LSTM:
        """A batch-first LSTM over embeddings, cfg.num_layers deep, dropout between layers."""
        dropout = cfg.dropout if cfg.num_layers > 1 else 0.0
        return cls(cfg.embedding_dim, hidden_size, cfg.num_layers, batch_first=True,
                   bidirectional=bidirectional, dropout=dropout)  # fmt: skip

    def forward(self, x, state=None):
        packed = isinstance(x, PackedSequence)
        data = x.data if packed else x
        kind = data.device.type
        if not torch.is_autocast_enabled(kind):
            return super().forward(x, state)
        self._update_flat_weights()
        dtype = torch.get_autocast_dtype(kind)
        # One buffer, cut in the order of the module's flattened weights (cuDNN's order): where
        # it matches cuDNN's layout, cuDNN uses it in place, else it compacts it (and warns).
        own = self._flat_weights
        flat = torch.cat([w.reshape(-1).to(dtype) for w in own])
        weights = [p.view_as(w) for p, w in zip(flat.split([w.numel() for w in own]), own)]
        if state is None:
            batch = int(x.batch_sizes[0]) if packed else data.size(0 if self.batch_first else 1)
            shape = (self.num_layers * (1 + self.bidirectional), batch, self.hidden_size)
            state = (data.new_zeros(shape, dtype=dtype),) * 2
        hx = [s.to(dtype) for s in self.permute_hidden(state, x.sorted_indices if packed else None)]
        args = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        with torch.autocast(kind, enabled=False):
            if packed:
                out, h, c = torch.lstm(data.to(dtype), x.batch_sizes, hx, weights, *args)
                out = PackedSequence(out, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
                return out, self.permute_hidden((h, c), x.unsorted_indices)
            out, h, c = torch.lstm(data.to(dtype), hx, weights, *args, self.batch_first)
        return out, (h, c)


class Dropout(nn.Module):
    """nn.Dropout, with CPU masks drawn from raw random bits (16 per element).

    torch's CPU dropout draws one Bernoulli sample per element, which costs more than the
    layer it regularises at these sizes; 64-bit random integers viewed as 16-bit lanes give the
    same mask ~3x faster. The drop probability is rounded to a multiple of 1/65536. The
    torch generator is used, so torch.manual_seed still makes runs repeatable.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        lanes = bits.view(torch.int16)[: x.numel()].view(x.shape)
        mask = (lanes >= self.threshold - 32768).to(x.dtype).mul_(65536 / (65536 - self.threshold))
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Encoder(nn.Module):
    def __init__(self, embed: nn.Embedding, cfg: ModelConfig):
        super().__init__()
        self.embed = embed
        self.bidirectional = cfg.bidirectional
        per_dir = cfg.hidden_size // 2 if cfg.bidirectional else cfg.hidden_size
        self.lstm = LSTM.of(cfg, per_dir, cfg.bidirectional)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        """src: (B, S) ids, src_len: (B,) -> outputs (B, S, H), state (h, c) each (L, B, H)."""
        x = self.dropout(self.embed(src))
        lengths = src_len.cpu()
        if bool((lengths == src.size(1)).all()):
            # No padding (the batcher groups equal source lengths): the plain LSTM call, which
            # is much faster than the packed path on CPU and gives the same result.
            out, (h, c) = self.lstm(x)
        else:
            # Sorted by length here, on the host: torch's enforce_sorted=False path copies the
            # order to the device and back, and each copy makes the host wait for the device.
            lengths, order = torch.sort(lengths, descending=True)
            order, inverse = to_device(torch.stack([order, torch.argsort(order)]), x.device)
            packed = pack_padded_sequence(x.index_select(0, order), lengths, batch_first=True)
            out, (h, c) = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
            out = out.index_select(0, inverse)
            h, c = h.index_select(1, inverse), c.index_select(1, inverse)
        if self.bidirectional:
            # h: (L*2, B, H/2) -> (L, B, H): concatenate the forward and backward final states.
            h, c = (torch.cat([s[0::2], s[1::2]], dim=-1) for s in (h, c))
        return out, (h, c)


class LuongAttention(nn.Module):
    """Global attention, 'general' score: score(h_t, h_s) = h_t^T W h_s."""

    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.key = nn.Linear(hidden, hidden, bias=False)
        self.combine = nn.Linear(2 * hidden, out_dim, bias=False)

    def keys(self, enc_out: torch.Tensor) -> torch.Tensor:
        """enc_out: (B, S, H) -> W h_s, (B, S, H); computed once per batch."""
        return self.key(enc_out)

    def forward(self, dec_out, keys, enc_out, src_mask):
        """dec_out: (B, T, H), keys/enc_out: (B, S, H), src_mask: (B, S) True at real tokens.

        Returns attentional states (B, T, out_dim) and weights (B, T, S).
        """
        scores = torch.bmm(dec_out, keys.transpose(1, 2))  # (B, T, S)
        scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights, enc_out)  # (B, T, H)
        return torch.tanh(self.combine(torch.cat([context, dec_out], dim=-1))), weights


class Decoder(nn.Module):
    def __init__(self, embed: nn.Embedding, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.embed = embed
        self.lstm = LSTM.of(cfg, cfg.hidden_size)
        out_dim = cfg.embedding_dim if cfg.tie_embeddings else cfg.hidden_size
        self.attention = (
            LuongAttention(cfg.hidden_size, out_dim) if cfg.attention == "luong" else None
        )
        self.dropout = Dropout(cfg.dropout)
        self.out = nn.Linear(out_dim, vocab_size)
        if cfg.tie_embeddings:
            self.out.weight = embed.weight

    def forward(self, tgt_in, state, enc_out, keys, src_mask):
        """tgt_in: (B, T) ids -> features (B, T, out_dim), new state, attention (B, T, S) or None.

        Call with T = full target length under teacher forcing, or T = 1 step by step.
        """
        x = self.dropout(self.embed(tgt_in))
        dec_out, state = self.lstm(x, state)
        weights = None
        if self.attention is not None:
            dec_out, weights = self.attention(dec_out, keys, enc_out, src_mask)
        return self.dropout(dec_out), state, weights


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        if cfg.share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ConfigError(
                "model.share_embeddings requires a joint vocabulary (same size on both sides); "
                "set model.share_embeddings: false"
            )
        self.cfg = cfg
        src_embed = nn.Embedding(src_vocab_size, cfg.embedding_dim, padding_idx=PAD)
        tgt_embed = src_embed
        if not cfg.share_embeddings:
            tgt_embed = nn.Embedding(tgt_vocab_size, cfg.embedding_dim, padding_idx=PAD)
        for emb in {id(src_embed): src_embed, id(tgt_embed): tgt_embed}.values():
            nn.init.normal_(emb.weight, std=cfg.embedding_dim**-0.5)
            with torch.no_grad():
                emb.weight[PAD].zero_()
        self.encoder = Encoder(src_embed, cfg)
        self.decoder = Decoder(tgt_embed, cfg, tgt_vocab_size)

    def encode(self, src, src_len):
        enc_out, state = self.encoder(src, src_len)
        lengths = to_device(src_len, src.device).unsqueeze(1)
        src_mask = torch.arange(src.size(1), device=src.device) < lengths  # (B, S) True at real
        keys = self.decoder.attention.keys(enc_out) if self.decoder.attention is not None else None
        return enc_out, state, keys, src_mask

    def features(self, src, src_len, tgt_in, teacher_forcing_ratio: float = 1.0):
        """Decoder features for every target position: (B, T, out_dim).

        teacher_forcing_ratio 1.0 runs the decoder over the whole target in one LSTM call.
        Below 1.0 it is the seed's per-step loop: at each step a coin decides whether the next
        input is the reference token or the model's own previous prediction.
        """
        enc_out, state, keys, src_mask = self.encode(src, src_len)
        if teacher_forcing_ratio >= 1.0:
            feats, _, _ = self.decoder(tgt_in, state, enc_out, keys, src_mask)
            return feats
        steps = []
        inp = tgt_in[:, :1]
        for t in range(tgt_in.size(1)):
            feat, state, _ = self.decoder(inp, state, enc_out, keys, src_mask)
            steps.append(feat)
            if t + 1 < tgt_in.size(1):
                if torch.rand(()) < teacher_forcing_ratio:
                    inp = tgt_in[:, t + 1 : t + 2]
                else:
                    inp = self.decoder.out(feat).argmax(-1)
        return torch.cat(steps, dim=1)

    def forward(
        self, src, src_len, tgt_in, tgt_out, label_smoothing=0.0, teacher_forcing_ratio=1.0,
        positions: torch.Tensor | None = None,
    ):  # fmt: skip
        """Summed cross-entropy over real target tokens and their count.

        src: (B, S), src_len: (B,), tgt_in: (B, T) = BOS + target, tgt_out: (B, T) = target + EOS,
        PAD-padded. Padding never reaches the output layer: only real positions are projected.
        positions (N,): the real tokens' indices into tgt_out.view(-1) (Batch.tgt_positions);
        with them nothing waits for the device (a boolean mask copies its count to the host).
        """
        feats = self.features(src, src_len, tgt_in, teacher_forcing_ratio)
        if positions is None:
            mask = tgt_out != PAD
            x, target = feats[mask], tgt_out[mask]
        else:
            x = feats.reshape(-1, feats.size(-1)).index_select(0, positions)
            target = tgt_out.reshape(-1).index_select(0, positions)
        out = self.decoder.out
        return linear_cross_entropy(x, out.weight, out.bias, target, label_smoothing), len(target)


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    return Seq2Seq(cfg, src_vocab_size, tgt_vocab_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
