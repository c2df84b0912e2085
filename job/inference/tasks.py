"""What a bulk job does to each block of rows, inside a Ray Data actor: translate the source
column, or score source-target pairs. Each task names the input columns it reads and returns
the output columns it adds; job.inference.bulk does the reading, ordering, parts and accounting.

List-valued outputs (n-best lists, alignments) are list columns in Parquet and JSON text in CSV.
"""

from __future__ import annotations

import json

import pyarrow as pa

from job.inference.translator import DecodeOptions, Translator
from job.model.sampling import Sampling

LIST_COLUMNS = {"nbest_translations", "nbest_scores", "alignment"}


def decode_options(opts) -> DecodeOptions:
    sampling = None
    if opts.sampling:
        sampling = Sampling.parse(opts.sampling, opts.temperature, opts.seed)
    return DecodeOptions(
        beam=opts.beam,
        batch_size=opts.batch_size,
        batch_tokens=opts.batch_tokens,
        length_penalty=opts.length_penalty,
        max_length_ratio=opts.max_length_ratio,
        nbest=opts.nbest,
        sampling=sampling,
        alignments=opts.alignments,
    )


def output_columns(opts) -> list[tuple[str, pa.DataType]]:
    """The columns a task adds after id and the input text columns, with their types."""
    if opts.task == "score":
        cols = [("score", pa.float64()), ("score_per_token", pa.float64()), ("tokens", pa.int64())]
        if opts.reverse_checkpoint:
            cols += [("reverse_score", pa.float64()), ("reverse_score_per_token", pa.float64())]
            cols += [("dual_score", pa.float64())]
        return [*cols, ("status", pa.string())]
    cols = [("translation", pa.string()), ("score", pa.float64()), ("status", pa.string())]
    if opts.nbest > 1:
        cols += [("nbest_translations", pa.list_(pa.string()))]
        cols += [("nbest_scores", pa.list_(pa.float64()))]
    if opts.alignments:
        cols += [("alignment", pa.list_(pa.int32()))]
    return cols


class Task:
    """Loaded once per actor: the model(s) and the options."""

    def __init__(self, checkpoint: str, opts, threads: int):
        self.opts = opts
        self.translator = Translator.from_checkpoint(checkpoint, threads=threads)
        self.reverse = None
        if opts.task == "score" and opts.reverse_checkpoint:
            self.reverse = Translator.from_checkpoint(opts.reverse_checkpoint, threads=threads)
        self.decode = decode_options(opts) if opts.task == "translate" else None

    def run(self, texts: dict[str, list], keys: list) -> dict[str, list]:
        """Output columns for the rows to process (texts: input column -> values)."""
        if self.opts.task == "score":
            return self._score(texts[self.opts.column], texts[self.opts.target_column])
        return self._translate(texts[self.opts.column], keys)

    def _translate(self, sources: list, keys: list) -> dict[str, list]:
        done = self.translator.translate(sources, options=self.decode, keys=keys)
        out = {"translation": [t.text for t in done], "score": [t.score for t in done]}
        out["status"] = [t.status for t in done]
        if self.opts.nbest > 1:
            out["nbest_translations"] = [[x for x, _ in t.nbest or []] for t in done]
            out["nbest_scores"] = [[s for _, s in t.nbest or []] for t in done]
        if self.opts.alignments:
            out["alignment"] = [t.alignment or [] for t in done]
        return out

    def _score(self, sources: list, targets: list) -> dict[str, list]:
        b = self.opts.batch_tokens
        done = self.translator.score(sources, targets, batch_tokens=b)
        out = {
            "score": [s.score for s in done],
            "score_per_token": [s.score_per_token for s in done],
        }
        out["tokens"] = [s.tokens for s in done]
        if self.reverse is not None:
            back = self.reverse.score(targets, sources, batch_tokens=b)
            out["reverse_score"] = [s.score for s in back]
            out["reverse_score_per_token"] = [s.score_per_token for s in back]
            out["dual_score"] = [_dual(f, r) for f, r in zip(done, back)]
        out["status"] = [s.status for s in done]
        return out


def _dual(forward, reverse) -> float:
    """Dual conditional cross-entropy (Junczys-Dowmunt 2018), lower is better:
    |H_f - H_r| + (H_f + H_r) / 2 with H = -score_per_token."""
    hf, hr = -forward.score_per_token, -reverse.score_per_token
    return abs(hf - hr) + 0.5 * (hf + hr)


def empty_values(opts, n: int) -> dict[str, list]:
    """Output columns for rows that are not processed (unparseable rows, resumed parts)."""
    out: dict[str, list] = {}
    for name, kind in output_columns(opts):
        if pa.types.is_list(kind):
            out[name] = [[] for _ in range(n)]
        elif pa.types.is_floating(kind) or pa.types.is_integer(kind):
            out[name] = [0 for _ in range(n)]
        else:
            out[name] = [""] * n
    return out


def to_csv_cell(table: pa.Table) -> pa.Table:
    """List columns as JSON text, for CSV output."""
    for i, name in enumerate(table.column_names):
        if name in LIST_COLUMNS:
            text = [json.dumps(v, ensure_ascii=False) for v in table.column(name).to_pylist()]
            table = table.set_column(i, name, pa.array(text, pa.string()))
    return table
