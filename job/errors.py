"""Errors a user can cause and fix: each kind names what was wrong and what to do.

The CLI prints any `UserError` as one line, `error: <message>`, and exits with code 2; anything
else is a bug and keeps its traceback. Each kind is also a ValueError, so callers of the Python
API can catch them the usual way.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix (a config key, a file, a column, a checkpoint path).

    The message is kept apart from `args`: Ray Data appends its retry advice to the args of an
    exception raised in a read task, which says nothing useful about a user's input."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(UserError):
    """A run config that cannot be used: the key, the value, what is allowed, where it came from."""


class DataError(UserError):
    """A corpus or output problem: the file, the column or row, and what to do."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, or does not match its own config/vocabulary."""


class VocabError(UserError):
    """A vocabulary that cannot be built or read (size, special ids, vocab.json)."""


class ReportError(UserError):
    """A report asked for on something that is not a local run directory."""


def user_error_of(exc: BaseException) -> UserError | None:
    """The UserError behind `exc`: itself, or the cause a Ray task or actor raised (Ray wraps
    it in a RayTaskError whose `cause` holds the original), else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, UserError) and not hasattr(exc, "cause"):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def not_found_message(exc: FileNotFoundError) -> str:
    """One line for a path that is not there: `not found: PATH`, also when a Ray task raised it
    (the wrapper's text is a whole traceback; the cause it holds has the path)."""
    seen, cur = 0, exc
    while cur is not None and seen < 8:
        if getattr(cur, "filename", None):
            return f"not found: {cur.filename}"
        nxt = getattr(cur, "cause", None) or cur.__cause__
        if nxt is None:
            break
        cur, seen = nxt, seen + 1
    lines = [line.strip() for line in str(cur).splitlines() if line.strip()]
    text = lines[-1] if lines else type(cur).__name__
    return text if "not found" in text.lower() else f"not found: {text}"
