"""Sampled decoding for back-translation: top-k or nucleus (top-p) sampling with a temperature,
reproducible per row.

Each row draws its random numbers from its own stream, seeded by (seed, the row's key) alone:
the same row gets the same sample whatever batch, actor or process decodes it. The search loop
(job.model.search.greedy) asks `choose` for each step's tokens, with the step's uniform numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from job.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    method: str  # "topk" or "topp"
    value: float  # k, or the nucleus mass p
    temperature: float = 1.0
    seed: int = 0

    @classmethod
    def parse(cls, spec: str, temperature: float = 1.0, seed: int = 0) -> Sampling:
        """`topk:K` (K >= 1) or `topp:P` (0 < P <= 1)."""
        method, _, raw = spec.partition(":")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        ok = (method == "topk" and value >= 1 and value == int(value)) or (
            method == "topp" and 0 < value <= 1
        )
        if not ok:
            raise ConfigError(
                f"--sampling {spec!r}: use topk:K (K a whole number >= 1) or topp:P (0 < P <= 1)"
            )
        if not temperature > 0:
            raise ConfigError(f"--temperature {temperature}: must be > 0")
        return cls(method, value, temperature, seed)

    def uniforms(self, keys: list, steps: int) -> torch.Tensor:
        """(len(keys), steps) uniform numbers in [0, 1), one stream per row key."""
        out = torch.empty(len(keys), steps)
        for i, key in enumerate(keys):
            digest = hashlib.blake2b(f"{self.seed}\x00{key}".encode(), digest_size=8).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
            torch.rand(steps, generator=g, out=out[i])
        return out

    def choose(self, logp: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Tokens (b,) drawn from log-probabilities (b, V) by inverse CDF with uniforms u (b,);
        forbidden tokens (-inf) are never drawn."""
        x = logp / self.temperature
        u = u.to(x.device, x.dtype)
        if self.method == "topk":
            vals, idx = x.topk(min(int(self.value), x.size(-1)), dim=-1)
            return _draw(torch.softmax(vals, dim=-1), idx, u)
        # top-p: the best 1,024 usually hold the nucleus; sort the whole vocabulary only for
        # the rows where they do not (the same nucleus either way, at a fraction of the cost)
        log_z = torch.logsumexp(x, dim=-1, keepdim=True)
        vals, idx = x.topk(min(NUCLEUS_FIRST_TRY, x.size(-1)), dim=-1)
        probs = torch.exp(vals - log_z)
        short = probs.sum(-1) < self.value
        out = _draw(_nucleus(probs, self.value), idx, u)
        if bool(short.any()):
            vals, idx = x[short].sort(dim=-1, descending=True)
            probs = torch.exp(vals - log_z[short])
            out[short] = _draw(_nucleus(probs, self.value), idx, u[short])
        return out


NUCLEUS_FIRST_TRY = 1024  # candidates looked at before sorting a row's whole vocabulary


def _nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Probabilities (sorted, best first) zeroed outside the smallest prefix with mass >= p
    (the first token always kept)."""
    before = probs.cumsum(-1) - probs  # mass of the tokens ranked above
    return probs * (before < p)


def _draw(probs: torch.Tensor, idx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF: the token (from idx) where the cumulative probability passes u * total."""
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, u.unsqueeze(1) * cdf[:, -1:], right=True)
    return idx.gather(1, pick.clamp_(max=cdf.size(-1) - 1)).squeeze(1)
