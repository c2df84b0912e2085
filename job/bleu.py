"""BLEU and chrF with sacrebleu on detokenised output, with sacrebleu's signatures.

`CorpusScorer` takes a corpus in pieces and keeps only the metrics' sufficient statistics (n-gram
match counts and lengths), so scoring 36M translations needs no more memory than scoring 36.
"""

from __future__ import annotations

import numpy as np
from sacrebleu.metrics import BLEU, CHRF


class CorpusScorer:
    def __init__(self):
        self.metrics = {"bleu": BLEU(), "chrf": CHRF()}
        self.totals: dict[str, np.ndarray] = {}
        self.sentences = 0

    def add(self, hypotheses: list[str], references: list[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses vs {len(references)} references")
        if not hypotheses:
            return
        for name, metric in self.metrics.items():
            stats = np.asarray(metric._extract_corpus_statistics(hypotheses, [references]))
            self.totals[name] = self.totals.get(name, 0) + stats.sum(axis=0)
        self.sentences += len(hypotheses)

    def result(self) -> dict:
        if not self.sentences:
            return {"bleu": None, "chrf": None, "sentences": 0}
        bleu, chrf = self.metrics["bleu"], self.metrics["chrf"]
        b = bleu._compute_score_from_stats(self.totals["bleu"].tolist())
        c = chrf._compute_score_from_stats(self.totals["chrf"].tolist())
        return {
            "bleu": round(b.score, 2),
            "chrf": round(c.score, 2),
            "sentences": self.sentences,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(b),
        }


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF of hypotheses against one reference each."""
    scorer = CorpusScorer()
    scorer.add(hypotheses, references)
    return scorer.result()
