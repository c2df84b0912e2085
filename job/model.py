"""LSTM encoder-decoder, plain PyTorch (no Ray here).

The seed's architecture made correct: embeddings in front of the LSTMs, packed padded source
sequences, padding ignored in the loss. On top of it, Luong-style global attention (the default):
the decoder LSTM runs over the whole target prefix in one call, then every decoder state attends
over the encoder outputs with padded source positions masked. `attention: none` is the seed's
plain encoder-decoder (final encoder state initialises the decoder, output = Linear(decoder state)).

Shapes: B batch, S source length, T target length, H hidden size, E embedding size, V vocabulary.

Two CPU training kernels live here too, both plain PyTorch ops (measured in BENCHMARKS.md):
`linear_cross_entropy` (output layer + loss + their gradients, chunk by chunk, so the (N, V)
logits never exist whole) and `Dropout` (masks from raw random bits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from job.config import ModelConfig
from job.errors import ConfigError
from job.vocab import PAD

LOSS_CHUNK_ROWS = (
    128  # rows of logits per chunk: 128 x V floats stay in a core's L2 for V up to ~8k
)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(x_i W^T + b, target_i) with label smoothing, and its gradients, in one pass.

    The forward computes the loss and the gradients for x, W and b chunk by chunk (logits,
    log-softmax and softmax of a chunk stay in cache); backward only scales them. Against
    F.linear + F.cross_entropy this never writes the (N, V) logits, log-probabilities and
    their gradient to memory: on CPU the output layer + loss runs 1.3-1.7x faster with the
    same three matrix products (bench numbers in BENCHMARKS.md).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, target, smoothing: float):
        n, v = x.size(0), weight.size(0)
        grad_x, grad_w, grad_b = (
            torch.empty_like(x),
            torch.zeros_like(weight),
            torch.zeros_like(bias),
        )
        rows = min(LOSS_CHUNK_ROWS, max(n, 1))
        logits = x.new_empty(rows, v)
        arange = torch.arange(rows, device=x.device)
        loss = x.new_zeros(())
        for start in range(0, n, rows):
            xc, tc = x[start : start + rows], target[start : start + rows]
            c = xc.size(0)
            z = torch.addmm(bias, xc, weight.t(), out=logits[:c])
            logp = torch.log_softmax(z, dim=1)
            # Label smoothing as F.cross_entropy: (1 - eps) * NLL(target) + eps * mean_j NLL(j).
            nll = logp.gather(1, tc.unsqueeze(1)).sum() * (1.0 - smoothing)
            if smoothing:
                nll = nll + logp.mean(1).sum() * smoothing
            loss -= nll
            # d loss / d z = softmax - (eps / V) - (1 - eps) * onehot(target)
            grad_z = logp.exp_()
            if smoothing:
                grad_z.sub_(smoothing / v)
            grad_z[arange[:c], tc] -= 1.0 - smoothing
            torch.mm(grad_z, weight, out=grad_x[start : start + c])
            grad_w.addmm_(grad_z.t(), xc)
            grad_b += grad_z.sum(0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        return grad_x.mul_(grad_loss), grad_w.mul_(grad_loss), grad_b.mul_(grad_loss), None, None


def linear_cross_entropy(x, weight, bias, target, smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of the logits x W^T + b against target (N,), without padding rows.

    Training on CPU (fp32) takes the chunked kernel above; otherwise (inference, CUDA, autocast)
    the plain F.linear + F.cross_entropy.
    """
    if (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
    ):
        return _LinearCrossEntropy.apply(x, weight, bias, target, smoothing)
    logits = F.linear(x, weight, bias)
    return F.cross_entropy(logits.float(), target, reduction="sum", label_smoothing=smoothing)


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
        self.lstm = nn.LSTM(
            cfg.embedding_dim,
            per_dir,
            cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
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
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
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
        self.lstm = nn.LSTM(
            cfg.embedding_dim,
            cfg.hidden_size,
            cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
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
        tgt_embed = (
            src_embed
            if cfg.share_embeddings
            else nn.Embedding(tgt_vocab_size, cfg.embedding_dim, padding_idx=PAD)
        )
        for emb in {id(src_embed): src_embed, id(tgt_embed): tgt_embed}.values():
            nn.init.normal_(emb.weight, std=cfg.embedding_dim**-0.5)
            with torch.no_grad():
                emb.weight[PAD].zero_()
        self.encoder = Encoder(src_embed, cfg)
        self.decoder = Decoder(tgt_embed, cfg, tgt_vocab_size)

    def encode(self, src, src_len):
        enc_out, state = self.encoder(src, src_len)
        positions = torch.arange(src.size(1), device=src.device)
        src_mask = positions.unsqueeze(0) < src_len.to(src.device).unsqueeze(
            1
        )  # (B, S) True at real tokens
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
        self,
        src,
        src_len,
        tgt_in,
        tgt_out,
        label_smoothing: float = 0.0,
        teacher_forcing_ratio: float = 1.0,
    ):
        """Summed cross-entropy over real target tokens and their count.

        src: (B, S), src_len: (B,), tgt_in: (B, T) = BOS + target, tgt_out: (B, T) = target + EOS,
        PAD-padded. Padding never reaches the output layer: only real positions are projected.
        """
        feats = self.features(src, src_len, tgt_in, teacher_forcing_ratio)
        mask = tgt_out != PAD
        target = tgt_out[mask]
        loss = linear_cross_entropy(
            feats[mask], self.decoder.out.weight, self.decoder.out.bias, target, label_smoothing
        )
        return loss, target.numel()


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    return Seq2Seq(cfg, src_vocab_size, tgt_vocab_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
