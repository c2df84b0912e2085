"""The Ray-free Python API (job.inference.translator.Translator) on a small untrained checkpoint."""

import pytest

from job.inference.translator import Translation, Translator

from conftest import make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), "data.max_length=16")


def test_one_translation_per_input_in_order_with_statuses(checkpoint):
    t = Translator.from_checkpoint(checkpoint, device="cpu")
    inputs = ["Save the file", "", "   ", None, 42, "Open file", " ".join(["file"] * 20)]
    out = t.translate(inputs, beam=1)
    assert len(out) == len(inputs) and all(isinstance(x, Translation) for x in out)
    statuses = [x.status for x in out]
    assert statuses == [
        "ok",
        "empty_source",
        "empty_source",
        "missing_source",
        "missing_source",
        "ok",
        "truncated",
    ]
    for x in out:
        if x.status in ("ok", "truncated"):
            assert x.score <= 0
        else:
            assert (x.text, x.score) == ("", 0.0)


def test_same_output_whatever_the_batch_size(checkpoint):
    t = Translator.from_checkpoint(checkpoint, device="cpu")
    sentences = ["Save the file", "Close the window", "Print %s", "Open file", "Save"]
    one = t.translate(sentences, beam=1, batch_size=1)
    many = t.translate(sentences, beam=1, batch_size=4)
    assert [x.text for x in one] == [x.text for x in many]
    assert [x.score for x in one] == pytest.approx([x.score for x in many], abs=1e-4)


def test_beam_defaults_to_the_checkpoints_beam_size(checkpoint):
    t = Translator.from_checkpoint(checkpoint, device="cpu")
    assert t.cfg.translate.beam_size == 5
    default, explicit = t.translate(["Save the file"]), t.translate(["Save the file"], beam=5)
    assert default[0].text == explicit[0].text
    assert default[0].score == pytest.approx(explicit[0].score, abs=1e-5)


def test_normalised_before_encoding(checkpoint):
    t = Translator.from_checkpoint(checkpoint, device="cpu")
    a, b = t.translate(["Save  the\tfile ", "Save the file"], beam=1)
    assert a.text == b.text and a.score == pytest.approx(b.score, abs=1e-5)
