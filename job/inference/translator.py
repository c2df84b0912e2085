"""The Python translation API, Ray-free: `Translator.from_checkpoint(path).translate([...])`,
`.score(sources, targets)`.

Bulk jobs over whole corpora with Ray Data (job.inference.bulk) run one Translator per actor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from job.checkpoint import local_checkpoint, read_checkpoint
from job.corpus.normalise import OK, normalise, text_status
from job.errors import ConfigError
from job.model.forced import force_decode
from job.model.sampling import Sampling
from job.model.search import decode_ids


@dataclass
class Translation:
    text: str
    score: float  # log-probability of the output under the model (EOS included)
    status: str = OK  # ok | empty_source | missing_source | truncated
    nbest: list[tuple[str, float]] | None = None  # with nbest > 1: (text, score), best first
    alignment: list[int] | None = None  # with alignments: per output token, its source token


@dataclass
class Score:
    score: float  # log-probability of the target given the source, EOS included
    score_per_token: float  # score / tokens
    tokens: int  # target tokens scored, EOS included
    status: str = OK  # ok | empty_source | empty_target | missing_* | truncated


@dataclass
class DecodeOptions:
    """Decoding at translate time; None takes the checkpoint's translate.* setting."""

    beam: int | None = None  # 1 = greedy
    batch_size: int | None = None  # sentences per decoding batch
    batch_tokens: int | None = None  # or: source tokens per batch (padding included)
    length_penalty: float | None = None
    max_length_ratio: float | None = None
    nbest: int = 1  # the n best hypotheses (beam search with a beam of at least n)
    sampling: Sampling | None = None  # sample instead of searching
    alignments: bool = False  # per output token, the source token it attends to most


class Translator:
    """Loads a checkpoint once and translates or scores lists of sentences.

    >>> Translator.from_checkpoint("runs/sample/checkpoint_...").translate(["Save file"])
    [Translation(text='Enregistrer le fichier', score=-0.41, status='ok')]
    """

    def __init__(self, model, vocab, cfg, device: str | torch.device = "cpu"):
        self.model, self.vocab, self.cfg = model.eval(), vocab, cfg
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(
        cls, path: str, device: str | None = None, threads: int | None = None
    ) -> Translator:
        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with local_checkpoint(path, inference=True) as d:
            loaded = read_checkpoint(d)
            model = loaded.model(device)
        return cls(model, loaded.vocab, loaded.cfg, device)

    def translate(
        self,
        sentences: list[str],
        beam: int | None = None,
        batch_size: int | None = None,
        options: DecodeOptions | None = None,
        keys: list | None = None,
    ) -> list[Translation]:
        """Translate raw sentences; every input gets exactly one Translation, in order.

        beam: beam width (default: the checkpoint's translate.beam_size; 1 = greedy).
        keys: a stable key per sentence for sampling's random streams (default: positions).
        """
        o = options or DecodeOptions()
        t = self.cfg.translate
        texts = [normalise(s) if isinstance(s, str) else None for s in sentences]
        out = [Translation("", 0.0, text_status(x)) for x in texts]
        todo = [i for i, x in enumerate(out) if x.status == OK]
        if not todo:
            return out
        if o.alignments and self.model.decoder.attention is None:
            raise ConfigError("--alignments needs a model with attention (model.attention: luong)")
        sources = self.vocab.encode_src([texts[i] for i in todo])
        decoded = decode_ids(
            self.model,
            sources,
            batch_size=batch_size or o.batch_size or t.batch_size,
            batch_tokens=o.batch_tokens,
            max_src_len=self.cfg.data.max_length,
            max_length_ratio=o.max_length_ratio or t.max_length_ratio,
            device=self.device,
            beam=beam or o.beam or t.beam_size,
            length_penalty=t.length_penalty if o.length_penalty is None else o.length_penalty,
            nbest=o.nbest,
            sampling=o.sampling,
            keys=[keys[i] for i in todo] if keys is not None else None,
        )
        hyps = self.vocab.decode_tgt(decoded.ids)
        aligned = self._alignments(sources, decoded.ids) if o.alignments else None
        for k, i in enumerate(todo):
            status = "truncated" if decoded.truncated[k] else OK
            out[i] = Translation(hyps[k], float(decoded.scores[k]), status)
            if decoded.nbest is not None:
                texts_k = self.vocab.decode_tgt([ids for ids, _ in decoded.nbest[k]])
                out[i].nbest = [(x, float(s)) for x, (_, s) in zip(texts_k, decoded.nbest[k])]
            if aligned is not None:
                out[i].alignment = aligned[k]
        return out

    def _alignments(self, sources: list[list[int]], outputs: list[list[int]]) -> list[list[int]]:
        forced = self._force(sources, outputs, alignments=True)
        return forced.alignments

    def score(
        self, sources: list[str], targets: list[str], batch_tokens: int | None = None
    ) -> list[Score]:
        """The model's log-probability of each target given its source, in one teacher-forced
        pass per batch; every pair gets exactly one Score, in order."""
        src = [normalise(s) if isinstance(s, str) else None for s in sources]
        tgt = [normalise(s) if isinstance(s, str) else None for s in targets]
        out = [Score(0.0, 0.0, 0, text_status(s, t, has_target=True)) for s, t in zip(src, tgt)]
        todo = [i for i, x in enumerate(out) if x.status == OK]
        if not todo:
            return out
        forced = self._force(
            self.vocab.encode_src([src[i] for i in todo]),
            self.vocab.encode_tgt([tgt[i] for i in todo]),
            batch_tokens=batch_tokens,
        )
        for k, i in enumerate(todo):
            n, total = forced.tokens[k], forced.scores[k]
            status = "truncated" if forced.truncated[k] else OK
            out[i] = Score(total, total / n, n, status)
        return out

    def _force(self, sources, targets, alignments: bool = False, batch_tokens: int | None = None):
        return force_decode(
            self.model,
            sources,
            targets,
            max_src_len=self.cfg.data.max_length,
            batch_tokens=batch_tokens or 8000,
            device=self.device,
            alignments=alignments,
        )
