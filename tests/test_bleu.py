"""job.bleu.score: corpus BLEU and chrF from sacrebleu, with their signatures."""

import pytest
import sacrebleu

from job.bleu import score

HYPS = ["the cat sat", "a quick brown fox jumps over the dog"]
REFS = ["the cat sat on the mat", "the quick brown fox jumped over the lazy dog"]


def test_identical_output_scores_100():
    sents = ["the cat sat on the mat .", "Hello , world !", "ein kleiner Test"]
    result = score(sents, list(sents))
    assert result["bleu"] == 100.0
    assert result["chrf"] == 100.0
    assert result["sentences"] == 3


def test_empty_corpus_has_no_scores():
    assert score([], []) == {"bleu": None, "chrf": None, "sentences": 0}


@pytest.mark.parametrize("hyps, refs", [(["a"], []), ([], ["a"]), (["a", "b"], ["a"])])
def test_mismatched_lengths_raise(hyps, refs):
    with pytest.raises(ValueError, match=f"{len(hyps)} hypotheses vs {len(refs)} references"):
        score(hyps, refs)


def test_signatures_describe_one_reference():
    result = score(HYPS, REFS)
    assert result["bleu_signature"].startswith("nrefs:1|")
    assert result["chrf_signature"].startswith("nrefs:1|")
    assert f"version:{sacrebleu.__version__}" in result["bleu_signature"]
    assert "tok:13a" in result["bleu_signature"]
    assert result["bleu_detail"].startswith("BLEU = ")


def test_matches_sacrebleu_called_directly():
    """Hypotheses and references go to sacrebleu in the right order, as one reference stream."""
    bleu = sacrebleu.corpus_bleu(HYPS, [REFS]).score
    chrf = sacrebleu.corpus_chrf(HYPS, [REFS]).score
    # The example is lopsided (short hypotheses), so swapping the arguments changes both scores.
    assert round(sacrebleu.corpus_bleu(REFS, [HYPS]).score, 2) != round(bleu, 2)
    assert round(sacrebleu.corpus_chrf(REFS, [HYPS]).score, 2) != round(chrf, 2)
    result = score(HYPS, REFS)
    assert 0 < result["bleu"] < 100
    assert result["bleu"] == round(bleu, 2)
    assert result["chrf"] == round(chrf, 2)
    assert result["sentences"] == 2
    assert result["bleu_detail"] == str(sacrebleu.corpus_bleu(HYPS, [REFS]))


def test_is_case_sensitive():
    """sacrebleu's defaults (mixed case) are kept: case differences cost BLEU and chrF."""
    lower = "the cat sat on the mat"
    result = score([lower.title()], [lower])
    assert result["bleu"] == 0.0
    assert result["chrf"] < 100.0
    assert score([lower], [lower])["bleu"] == 100.0
