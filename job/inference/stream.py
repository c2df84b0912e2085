"""`translate` with no `--input`: sentences from stdin, translations to stdout, line by line,
in this process with no Ray cluster (as `marian-decoder`, `fairseq-interactive` and
`onmt_translate` do): for trying a sentence, or for a pipe.

A reader thread takes lines as they come; each batch is what is already there (at least one
line, at most the batch size), so an interactive user gets each answer at once and a pipe of
many lines gets full batches. Output line i answers input line i, always: a line that cannot be
translated (empty, or not UTF-8) gets an empty line, and is counted by reason in the summary that
goes to stderr at the end, as one JSON object.

Formats: `text` (the translation) or `jsonl` (one object per line: translation, score, status,
and nbest / alignment when asked for).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections import Counter
from typing import BinaryIO, TextIO

from job.corpus.normalise import OK
from job.errors import ConfigError
from job.inference.translator import DecodeOptions, Translation, Translator

FORMATS = ("text", "jsonl")
_EOF = None


def _read_lines(stream: BinaryIO, lines: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw)
    lines.put(_EOF)


def batches(stream: BinaryIO, max_lines: int):
    """Lists of raw lines: each blocks for one line, then takes what else is already read."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(stream, lines), daemon=True).start()
    while True:
        first = lines.get()
        if first is _EOF:
            return
        batch = [first]
        while len(batch) < max_lines:
            try:
                raw = lines.get_nowait()
            except queue.Empty:
                break
            if raw is _EOF:
                yield batch
                return
            batch.append(raw)
        yield batch


def decode_line(raw: bytes) -> str | None:
    """The line's text without its line end, or None when it is not UTF-8."""
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None


def format_line(t: Translation, fmt: str) -> str:
    if fmt == "text":
        return t.text
    obj = {"translation": t.text, "score": round(t.score, 6), "status": t.status}
    if t.nbest is not None:
        obj["nbest"] = [{"translation": x, "score": round(s, 6)} for x, s in t.nbest]
    if t.alignment is not None:
        obj["alignment"] = t.alignment
    return json.dumps(obj, ensure_ascii=False)


def check_format(fmt: str, options: DecodeOptions) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} writes files: from stdin, use --format text or jsonl")
    if fmt == "text" and (options.nbest > 1 or options.alignments):
        raise ConfigError("--nbest and --alignments on stdout need --format jsonl")


def translate_stream(
    translator: Translator,
    options: DecodeOptions,
    fmt: str = "text",
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    max_lines: int | None = None,
) -> dict:
    """Translate stdin to stdout until stdin ends; returns the summary (lines, status counts,
    seconds). Sampling draws line i's sample from (seed, i), whatever the batches were."""
    check_format(fmt, options)
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout
    max_lines = max_lines or options.batch_size or translator.cfg.translate.batch_size
    started, done, status = time.perf_counter(), 0, Counter()
    for raw in batches(stdin, max_lines):
        texts = [decode_line(r) for r in raw]
        out = translator.translate(
            [x for x in texts if x is not None],
            options=options,
            keys=[done + i for i, x in enumerate(texts) if x is not None],
        )
        results = iter(out)
        for text in texts:
            t = next(results) if text is not None else Translation("", 0.0, "invalid_utf8")
            status[t.status] += 1
            stdout.write(format_line(t, fmt) + "\n")
        stdout.flush()
        done += len(texts)
    seconds = round(time.perf_counter() - started, 3)
    return {"lines": done, "status": dict(status), "ok": status[OK], "seconds": seconds}
