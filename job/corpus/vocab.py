"""Vocabularies: a joint SentencePiece model (default) or whitespace words per side (the seed's).

Both use the same special ids, so the model and the decoder never care which one is in use:
pad=0, unk=1, bos=2, eos=3. A vocabulary is saved as a directory (`vocab.json` plus, for
SentencePiece, `spm.model`) and travels as bytes to every worker and into every checkpoint.
"""

from __future__ import annotations

import io
import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator

import sentencepiece as spm

from job import storage
from job.config import VocabConfig
from job.errors import VocabError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
VOCAB_DIR = "vocab"  # a vocabulary's directory in a run directory and in a checkpoint
META_FILE, SPM_FILE = "vocab.json", "spm.model"


class Vocabulary(ABC):
    """Maps sentences to id lists and back, for the source and the target side."""

    kind: str
    joint: bool

    @property
    @abstractmethod
    def src_size(self) -> int: ...

    @property
    @abstractmethod
    def tgt_size(self) -> int: ...

    @abstractmethod
    def encode_src(self, sentences: list[str]) -> list[list[int]]: ...

    @abstractmethod
    def encode_tgt(self, sentences: list[str]) -> list[list[int]]: ...

    @abstractmethod
    def decode_tgt(self, ids: list[list[int]]) -> list[str]: ...

    @abstractmethod
    def src_tokens(self, sentence: str) -> list[str]: ...

    @abstractmethod
    def tgt_tokens(self, ids: list[int]) -> list[str]: ...

    @abstractmethod
    def to_files(self) -> dict[str, bytes]: ...

    def save(self, directory: str) -> None:
        """Write the vocabulary's files into `directory` (a local path or a URI)."""
        for name, data in self.to_files().items():
            storage.write_bytes(storage.join(str(directory), name), data)

    @staticmethod
    def from_files(files: dict[str, bytes]) -> Vocabulary:
        try:
            meta = json.loads(files[META_FILE])
        except (KeyError, ValueError):
            raise VocabError(f"{META_FILE} is missing or is not JSON") from None
        kind = meta.get("type") if isinstance(meta, dict) else None
        if kind == "sentencepiece":
            if SPM_FILE not in files:
                raise VocabError(f"a sentencepiece vocabulary needs {SPM_FILE} next to {META_FILE}")
            return SentencePieceVocab(files[SPM_FILE])
        if (
            kind == "word"
            and isinstance(meta.get("src"), list)
            and isinstance(meta.get("tgt"), list)
        ):
            return WordVocab(meta["src"], meta["tgt"])
        raise VocabError(f"{META_FILE}: not a vocabulary this job wrote (type {kind!r})")

    @staticmethod
    def load(directory: str) -> Vocabulary:
        """Read a vocabulary saved with `save` (a local path or a URI)."""
        directory = str(directory)
        files = {}
        for name in (META_FILE, SPM_FILE):
            path = storage.join(directory, name)
            if storage.exists(path):
                files[name] = storage.read_bytes(path)
        if META_FILE not in files:
            raise VocabError(f"no vocabulary in {directory}: {META_FILE} not found")
        return Vocabulary.from_files(files)


class SentencePieceVocab(Vocabulary):
    kind = "sentencepiece"
    joint = True

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as exc:
            raise VocabError(f"{SPM_FILE} is not a SentencePiece model ({exc})") from None
        ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if ids != (PAD, UNK, BOS, EOS):
            raise VocabError(
                f"SentencePiece model has special ids {ids}, expected {(PAD, UNK, BOS, EOS)}"
            )

    @property
    def src_size(self) -> int:
        return self.sp.get_piece_size()

    tgt_size = src_size

    def encode_src(self, sentences):
        return self.sp.encode(list(sentences))

    encode_tgt = encode_src

    def decode_tgt(self, ids):
        return self.sp.decode([list(map(int, x)) for x in ids])

    def src_tokens(self, sentence):
        return self.sp.encode(sentence, out_type=str)

    def tgt_tokens(self, ids):
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def to_files(self):
        meta = {"type": self.kind, "size": self.src_size}
        return {META_FILE: json.dumps(meta).encode(), SPM_FILE: self.model_proto}


class WordVocab(Vocabulary):
    """Whitespace tokens, one vocabulary per side (the seed's torchtext Fields)."""

    kind = "word"
    joint = False

    def __init__(self, src_words: list[str], tgt_words: list[str]):
        for side, words in (("src", src_words), ("tgt", tgt_words)):
            if words[: len(SPECIALS)] != SPECIALS:
                raise VocabError(f"word vocabulary {side} side must start with {SPECIALS}")
        self.src_words, self.tgt_words = src_words, tgt_words
        self.src_index = {w: i for i, w in enumerate(src_words)}
        self.tgt_index = {w: i for i, w in enumerate(tgt_words)}

    @property
    def src_size(self):
        return len(self.src_words)

    @property
    def tgt_size(self):
        return len(self.tgt_words)

    def encode_src(self, sentences):
        get = self.src_index.get
        return [[get(w, UNK) for w in s.split()] for s in sentences]

    def encode_tgt(self, sentences):
        get = self.tgt_index.get
        return [[get(w, UNK) for w in s.split()] for s in sentences]

    def decode_tgt(self, ids):
        words = self.tgt_words
        return [" ".join(words[int(i)] for i in x if int(i) > EOS) for x in ids]

    def src_tokens(self, sentence):
        return sentence.split()

    def tgt_tokens(self, ids):
        return [self.tgt_words[int(i)] for i in ids]

    def to_files(self):
        meta = {"type": self.kind, "src": self.src_words, "tgt": self.tgt_words}
        return {META_FILE: json.dumps(meta, ensure_ascii=False).encode()}


def build_vocab(
    cfg: VocabConfig,
    pairs: Iterable[tuple[list[str], list[str]]],
    num_threads: int | None = None,
) -> Vocabulary:
    """Build a vocabulary from batches of (source sentences, target sentences); SentencePiece
    trains with num_threads threads (default: every core of this machine)."""
    if cfg.type == "word":
        return _build_words(cfg, pairs)
    return _build_sentencepiece(cfg, pairs, num_threads or os.cpu_count() or 1)


def _build_words(cfg: VocabConfig, pairs) -> WordVocab:
    src, tgt = Counter(), Counter()
    for s_batch, t_batch in pairs:
        for s in s_batch:
            src.update(s.split())
        for t in t_batch:
            tgt.update(t.split())

    def top(counter: Counter) -> list[str]:
        words = [
            w for w, c in counter.most_common() if c >= cfg.min_frequency and w not in SPECIALS
        ]
        return SPECIALS + words[: cfg.vocab_size]

    return WordVocab(top(src), top(tgt))


def _build_sentencepiece(cfg: VocabConfig, pairs, num_threads: int) -> SentencePieceVocab:
    def sentences() -> Iterator[str]:
        for s_batch, t_batch in pairs:
            yield from s_batch
            yield from t_batch

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=model,
            vocab_size=cfg.vocab_size,
            model_type=cfg.model_type,
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.max_sentences,
            shuffle_input_sentence=True,
            # Text is already NFC-normalised with collapsed whitespace (job.corpus.normalise);
            # keep it byte-exact so detokenised output compares with raw references.
            normalization_rule_name="identity",
            byte_fallback=True,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            max_sentence_length=1 << 16,
            num_threads=num_threads,
            minloglevel=2,
            hard_vocab_limit=False,
        )
    except RuntimeError as exc:
        raise VocabError(
            "could not build the SentencePiece vocabulary with "
            f"vocab.vocab_size={cfg.vocab_size}: {exc}"
        ) from None
    return SentencePieceVocab(model.getvalue())
