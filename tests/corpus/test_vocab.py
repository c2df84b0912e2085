import io
import json

import pytest
import sentencepiece as spm

from job.config import VocabConfig
from job.corpus.vocab import (
    BOS,
    EOS,
    PAD,
    UNK,
    SentencePieceVocab,
    Vocabulary,
    WordVocab,
    build_vocab,
)
from job.errors import VocabError

SRC = ["Save the file", "Cannot open file %s", "Remove --force option", "42", "true"] * 20
TGT = [
    "Enregistrer le fichier",
    "Impossible d'ouvrir le fichier %s",
    "Retirer l'option --force",
    "42",
    "vrai",
] * 20


def test_sentencepiece_round_trip_and_specials(tmp_path):
    vocab = build_vocab(VocabConfig(vocab_size=400), [(SRC, TGT)])
    assert isinstance(vocab, SentencePieceVocab) and vocab.joint
    ids = vocab.encode_tgt(["Impossible d'ouvrir le fichier %s"])[0]
    assert all(i > EOS for i in ids)
    assert vocab.decode_tgt([ids]) == ["Impossible d'ouvrir le fichier %s"]
    vocab.save(tmp_path / "v")
    again = Vocabulary.load(tmp_path / "v")
    assert again.encode_src(SRC[:3]) == vocab.encode_src(SRC[:3])
    assert again.src_size == vocab.src_size == vocab.tgt_size


def test_sentencepiece_unseen_characters_survive_via_byte_fallback():
    vocab = build_vocab(VocabConfig(vocab_size=400), [(SRC, TGT)])
    text = "fichier ☃ ß"
    assert vocab.decode_tgt(vocab.encode_tgt([text])) == [text]


def test_word_vocab_round_trip_per_side(tmp_path):
    vocab = build_vocab(VocabConfig(type="word", vocab_size=5), [(SRC, TGT)])
    assert isinstance(vocab, WordVocab) and not vocab.joint
    assert vocab.src_size == 4 + 5 and vocab.tgt_size == 4 + 5
    assert vocab.encode_src(["file zzz"])[0][1] == UNK
    ids = vocab.encode_tgt(["le fichier"])[0]
    assert vocab.decode_tgt([ids]) == ["le fichier"]
    vocab.save(tmp_path / "w")
    assert Vocabulary.load(tmp_path / "w").tgt_words == vocab.tgt_words


def test_sentencepiece_model_uses_the_fixed_special_ids():
    vocab = build_vocab(VocabConfig(vocab_size=400), [(SRC, TGT)])
    sp = vocab.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD, UNK, BOS, EOS)
    assert vocab.tgt_tokens([BOS, EOS]) == ["<s>", "</s>"]


def test_sentencepiece_model_with_other_special_ids_is_refused():
    model = io.BytesIO()  # SentencePiece's defaults: unk=0, bos=1, eos=2, no pad
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SRC + TGT), model_writer=model, vocab_size=40, minloglevel=2
    )
    with pytest.raises(VocabError, match="special ids"):
        SentencePieceVocab(model.getvalue())


def test_too_large_vocab_shrinks_to_what_the_text_supports():
    # hard_vocab_limit=False: SentencePiece shrinks to what the text supports instead of failing.
    vocab = build_vocab(VocabConfig(vocab_size=5000), [(SRC, TGT)])
    assert 300 <= vocab.src_size < 5000


def test_too_small_vocab_is_a_clear_error():
    # Byte fallback needs 256 byte pieces plus the characters: 40 pieces cannot hold them.
    with pytest.raises(VocabError, match=r"vocab\.vocab_size=40"):
        build_vocab(VocabConfig(vocab_size=40), [(SRC, TGT)])


def test_load_missing_directory(tmp_path):
    with pytest.raises(VocabError, match=r"vocab\.json not found"):
        Vocabulary.load(tmp_path)


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"vocab.json": b"not json"},
        {"vocab.json": json.dumps({"type": "bpe-from-elsewhere"}).encode()},
        {"vocab.json": json.dumps({"type": "sentencepiece"}).encode()},
        {"vocab.json": json.dumps({"type": "sentencepiece"}).encode(), "spm.model": b"garbage"},
    ],
)
def test_unreadable_vocabulary_files_are_a_vocab_error(files):
    with pytest.raises(VocabError):
        Vocabulary.from_files(files)
