"""Text rules shared by training data and translation inputs (job.corpus.normalise)."""

import pytest

from job.corpus.normalise import OK, REASONS, normalise, text_status


def test_normalise_nfc_and_whitespace():
    assert normalise("  Cafe\u0301 \t au\n lait  ") == "Café au lait"
    assert normalise("a\u00a0:") == "a\u00a0:"  # no-break space is content, not layout
    assert normalise(None) is None


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("a", "b", OK),
        (None, "b", "missing_source"),
        ("a", None, "missing_target"),
        (None, None, "missing_source"),  # the source side is reported first
        ("", "b", "empty_source"),
        ("a", "", "empty_target"),
        ("", None, "missing_target"),  # missing (null) before empty
    ],
)
def test_pair_status_order(source, target, expected):
    assert text_status(source, target, has_target=True) == expected


def test_without_a_target_only_the_source_counts():
    assert text_status("a") == OK
    assert text_status("a", None) == OK
    assert text_status("") == "empty_source"
    assert text_status(None) == "missing_source"


def test_every_status_a_rule_can_give_is_a_known_reason():
    rows = [(s, t) for s in (None, "", "a") for t in (None, "", "b")]
    given = {text_status(s, t, has_target=True) for s, t in rows} - {OK}
    assert given and given <= set(REASONS)
