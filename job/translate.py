"""The Python translation API, Ray-free: `Translator.from_checkpoint(path).translate([...])`.

Bulk translation of whole corpora with Ray Data (job.bulk) runs one Translator per actor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from job.checkpoint import local_checkpoint, read_checkpoint
from job.search import decode_ids
from job.text import OK, normalise, text_status


@dataclass
class Translation:
    text: str
    score: float  # log-probability of the output (EOS included)
    status: str = OK  # ok | empty_source | missing_source | truncated


class Translator:
    """Loads a checkpoint once and translates lists of sentences.

    >>> Translator.from_checkpoint("runs/sample/checkpoint_...").translate(["Save file"])
    [Translation(text='Enregistrer le fichier', score=-0.41, status='ok')]
    """

    def __init__(self, model, vocab, cfg, device: str | torch.device = "cpu"):
        self.model, self.vocab, self.cfg, self.device = (
            model.eval(),
            vocab,
            cfg,
            torch.device(device),
        )

    @classmethod
    def from_checkpoint(
        cls, path: str, device: str | None = None, threads: int | None = None
    ) -> Translator:
        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with local_checkpoint(path) as d:
            loaded = read_checkpoint(d)
            model = loaded.model(device)
        return cls(model, loaded.vocab, loaded.cfg, device)

    def translate(
        self, sentences: list[str], beam: int | None = None, batch_size: int | None = None
    ) -> list[Translation]:
        """Translate raw sentences; every input gets exactly one Translation, in order.

        beam: beam width (default: the checkpoint's translate.beam_size; 1 = greedy).
        """
        texts = [normalise(s) if isinstance(s, str) else None for s in sentences]
        out = [Translation("", 0.0, text_status(t)) for t in texts]
        todo = [i for i, t in enumerate(out) if t.status == OK]
        if not todo:
            return out
        t = self.cfg.translate
        decoded = decode_ids(
            self.model,
            self.vocab.encode_src([texts[i] for i in todo]),
            batch_size=batch_size or t.batch_size,
            max_src_len=self.cfg.data.max_length,
            max_length_ratio=t.max_length_ratio,
            device=self.device,
            beam=beam or t.beam_size,
            length_penalty=t.length_penalty,
        )
        hyps = self.vocab.decode_tgt(decoded.ids)
        for k, i in enumerate(todo):
            status = "truncated" if decoded.truncated[k] else OK
            out[i] = Translation(hyps[k], float(decoded.scores[k]), status)
        return out
