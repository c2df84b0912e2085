import pytest

from job.config import VocabConfig
from job.vocab import BOS, EOS, PAD, UNK, SentencePieceVocab, Vocabulary, WordVocab, build_vocab

SRC = ["Save the file", "Cannot open file %s", "Remove --force option", "42", "true"] * 20
TGT = ["Enregistrer le fichier", "Impossible d'ouvrir le fichier %s", "Retirer l'option --force", "42", "vrai"] * 20


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


def test_special_ids_are_fixed():
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)


def test_too_large_vocab_is_a_clear_error_or_shrinks():
    # hard_vocab_limit=False: SentencePiece shrinks to what the text supports instead of failing.
    vocab = build_vocab(VocabConfig(vocab_size=5000), [(SRC, TGT)])
    assert 16 <= vocab.src_size <= 5000


def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        Vocabulary.load(tmp_path)
