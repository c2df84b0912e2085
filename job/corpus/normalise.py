"""Sentence text before tokenisation: normalisation and the rules that make a row unusable.

Ray-free and torch-free: the corpus pipeline (job.corpus.blocks), the Translator and bulk
translation all use these, so a row gets the same status whichever path reads it.
"""

from __future__ import annotations

import re
import unicodedata

OK = "ok"
# Reasons a row cannot be used, in the order they are checked: the reader's parse reasons
# (job.corpus.parsers), then the text rules below, then the length rule applied when encoding.
PARSE_REASONS = (
    "blank_line",
    "wrong_field_count",
    "unterminated_quote",
    "malformed_csv",
    "invalid_utf8",
    "duplicate_header",
)
TEXT_REASONS = ("missing_source", "missing_target", "empty_source", "empty_target")
REASONS = (*PARSE_REASONS, *TEXT_REASONS, "too_long")

_WS = re.compile(r"[ \t\r\n\f\v]+")


def normalise(text: str | None) -> str | None:
    """Unicode NFC, runs of ASCII whitespace collapsed to one space, ends stripped."""
    if text is None:
        return None
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def text_status(source: str | None, target: str | None = "", *, has_target: bool = False) -> str:
    """OK, or why a normalised row cannot be used: a missing (null) side before an empty one.

    Without a target side (`has_target` False: translation inputs) only the source counts.
    """
    if source is None:
        return "missing_source"
    if has_target and target is None:
        return "missing_target"
    if not source:
        return "empty_source"
    if has_target and not target:
        return "empty_target"
    return OK
