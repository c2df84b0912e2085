"""Bulk translation of whole corpora with Ray Data.

read (CSV/TSV/Parquet/text, job.reader) -> map_batches(TranslateActor, actor pool; each actor
loads the checkpoint once) -> one output row per input row, in input order, written in parts
that land atomically (job.parts), so an interrupted run resumes where it stopped. Output
columns: id, source, translation, score, status (+ reference when asked for). Status: ok,
truncated (source over data.max_length), empty_source, missing_source, or the reason the row
could not be parsed (then source holds the raw line).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import pyarrow as pa
import ray
import ray.data
from tqdm import tqdm

from job import parts
from job.corpus import Corpus, open_corpus
from job.errors import DataError
from job.evaluate import score
from job.reader import FILE, LINE, RAW, ROW, STATUS
from job.runtime import LIGHT_TASK
from job.text import OK, normalise
from job.translate import Translator

OUTPUT_SCHEMA = pa.schema([
    ("id", pa.int64()), ("source", pa.string()), ("translation", pa.string()),
    ("score", pa.float64()), ("status", pa.string()),
])  # fmt: skip


@dataclass
class BulkOptions:
    column: str = "source"  # source text column
    id_column: str | None = (
        None  # default: an `id` column when every file has one, else row numbers
    )
    reference_column: str | None = None  # score BLEU/chrF against this column
    num_actors: int = 1
    use_gpu: bool = False
    batch_size: int = 128  # sentences per decoding batch
    beam: int | None = None  # default: the checkpoint's translate.beam_size
    progress: bool = True  # a progress bar on stderr
    part_rows: int = parts.PART_ROWS  # rows per output part, the unit of resuming
    output_format: str | None = None  # "csv" or "parquet" parts, for a directory output


class TranslateActor:
    """Ray Data callable class: one Translator per actor (checkpoint loaded once), reused for every
    batch. Tags each row with its output part; rows of parts already written (`skip`) pass
    through undecoded."""

    def __init__(
        self,
        checkpoint: str,
        opts: BulkOptions,
        threads: int,
        file_index: dict[str, int],
        skip: frozenset,
    ):
        self.translator = Translator.from_checkpoint(checkpoint, threads=threads)
        self.opts, self.file_index, self.skip = opts, file_index, skip

    def __call__(self, table: pa.Table) -> pa.Table:
        column = self.opts.column
        files, rows = table.column(FILE).to_pylist(), table.column(ROW).to_pylist()
        keys = [
            parts.part_key(self.file_index.get(f, 0), r, self.opts.part_rows)
            for f, r in zip(files, rows)
        ]
        parsed = table.column(STATUS).to_pylist()
        raw = table.column(RAW).to_pylist()
        sources = table.column(column).to_pylist()
        todo = [
            i for i, (k, st) in enumerate(zip(keys, parsed)) if st is None and k not in self.skip
        ]
        text: list = [None] * len(keys)
        scores: list = [None] * len(keys)
        status = list(parsed)  # a parse reason, or None (skipped) until translated
        done = self.translator.translate(
            [sources[i] for i in todo], self.opts.beam, self.opts.batch_size
        )
        for i, r in zip(todo, done):
            text[i], scores[i], status[i] = r.text, r.score, r.status
        for i, st in enumerate(parsed):
            if (
                st is not None
            ):  # unparseable row: one output row all the same, source = the raw line
                text[i], scores[i] = "", 0.0
                sources[i] = raw[i]
        table = table.drop_columns(
            [c for c in (FILE, ROW, LINE, STATUS, RAW) if c in table.column_names]
        )
        at = table.schema.get_field_index(column)
        table = table.set_column(at, column, pa.array(sources, pa.string()))
        for name, values, kind in (
            ("translation", text, pa.string()), ("score", scores, pa.float64()),
            ("status", status, pa.string()), ("_part", keys, pa.string()),
        ):  # fmt: skip
            table = table.append_column(name, pa.array(values, kind))
        return table


def bulk_translate(
    checkpoint: str, input_path: str, output: str, options: BulkOptions | None = None, **kwargs
) -> dict:
    """Translate every row of a corpus and write it in input order, resumably.

    output: a directory of parts (part-FFFFF-CCCCCC.parquet, or .csv with output_format="csv"),
    or a single .parquet/.csv/.tsv file, assembled from parts kept in OUTPUT.parts/ until done.
    A re-run of the same job skips the parts already there (job.parts). Options: BulkOptions,
    or its fields as keyword arguments. id: the id column, else the row's 0-based position in
    the whole input. Returns rows, counts by status, and BLEU/chrF when a reference column is
    given.
    """
    opts = dataclasses.replace(options or BulkOptions(), **kwargs)
    wanted = [opts.column] + ([opts.reference_column] if opts.reference_column else [])
    corpus = open_corpus(
        input_path,
        wanted,
        optional_columns=(opts.id_column or "id",),
        plain_text_column=opts.column,
    )
    if opts.id_column and opts.id_column not in corpus.optional:
        raise DataError(f"{input_path}: id column {opts.id_column!r} not found in every file")
    id_column = corpus.optional[0] if corpus.optional else None
    single = output.lower().endswith((".parquet", ".pq", ".csv", ".tsv"))
    if single:
        fmt = "csv" if output.lower().endswith((".csv", ".tsv")) else "parquet"
    else:
        fmt = "csv" if opts.output_format == "csv" else "parquet"
    parts_dir = output + ".parts" if single else output
    job = {
        "input": input_path, "files": corpus.files, "column": opts.column, "id_column": id_column,
        "reference_column": opts.reference_column, "checkpoint": checkpoint, "beam": opts.beam,
        "part_rows": opts.part_rows, "format": fmt,
    }  # fmt: skip
    done = parts.start_parts(parts_dir, job)

    # translate, writing each part as soon as its last row arrives
    ds = _translated(corpus, checkpoint, opts, done)
    writer = parts.PartWriter(parts_dir, fmt, done)
    total = corpus.count_rows() if opts.progress else None
    bar = tqdm(
        total=total, desc="[translate]", unit=" rows", file=sys.stderr, disable=not opts.progress
    )
    seen, started = 0, time.perf_counter()
    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        n = table.num_rows
        ids = table.column(id_column) if id_column else pa.array(range(seen, seen + n), pa.int64())
        cols = {"id": ids, "source": table.column(opts.column)}
        cols.update({c: table.column(c) for c in ("translation", "score", "status")})
        if opts.reference_column:
            cols["reference"] = table.column(opts.reference_column)
        writer.add(table.column("_part").to_pylist(), pa.table(cols))
        seen += n
        bar.update(n)
    writer.close()
    bar.close()
    finished = time.perf_counter()

    # count what the parts hold (resumed ones included), then assemble or mark done
    names = parts.list_parts(parts_dir)
    result = {
        "output": output, "rows": 0, "status": {}, "parts": len(names), "parts_resumed": len(done),
        "parts_written": writer.written, "wall_s": round(finished - started, 2),
    }  # fmt: skip
    hyps, refs = _tally(parts.read_parts(parts_dir, names, fmt, _tally_columns(opts)), result, opts)
    if result["rows"] != seen:
        raise DataError(
            f"{parts_dir}: the parts hold {result['rows']} rows but the input has {seen} "
            "(did the input change since the parts were written?); "
            f"delete {parts_dir} and run again"
        )
    if single:
        parts.assemble(parts_dir, names, fmt, output, OUTPUT_SCHEMA)
    else:
        parts.mark_done(parts_dir, {"rows": result["rows"], "status": result["status"]})
    if opts.reference_column:
        result["scores"] = score(hyps, refs)
    return result


def _translated(
    corpus: Corpus, checkpoint: str, opts: BulkOptions, done: set[str]
) -> ray.data.Dataset:
    """The corpus read in blocks of one actor call each (8 decoding batches, at least 1,024 rows):
    a single large file still feeds every actor, and each call sorts enough rows by length to
    batch well. Output order = input order."""
    rows_per_call = max(1024, opts.batch_size * 8)
    ds = corpus.dataset(rows_per_block=rows_per_call)
    ds.context.execution_options.preserve_order = True
    constructor = {
        "checkpoint": checkpoint, "opts": opts,
        "threads": actor_threads(opts.num_actors, opts.use_gpu),
        "file_index": {f: i for i, f in enumerate(corpus.files)}, "skip": frozenset(done),
    }  # fmt: skip
    return ds.map_batches(
        TranslateActor,
        fn_constructor_kwargs=constructor,
        batch_size=rows_per_call,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=opts.num_actors),
        **actor_resources(opts.num_actors, opts.use_gpu),
    )


def _tally_columns(opts: BulkOptions) -> list[str]:
    return ["status", "translation"] + (["reference"] if opts.reference_column else [])


def _tally(tables, result: dict, opts: BulkOptions) -> tuple[list[str], list[str]]:
    """Rows and statuses into `result`; the (hypothesis, reference) pairs to score."""
    hyps, refs = [], []
    for table in tables:
        result["rows"] += table.num_rows
        statuses = table.column("status").to_pylist()
        for st in statuses:
            result["status"][st] = result["status"].get(st, 0) + 1
        if opts.reference_column:
            texts = table.column("translation").to_pylist()
            for st, h, r in zip(statuses, texts, table.column("reference").to_pylist()):
                ref = normalise(r)
                if ref and st in (OK, "truncated"):
                    hyps.append(h)
                    refs.append(ref)
    return hyps, refs


def actor_resources(num_actors: int, use_gpu: bool) -> dict:
    """Ray resources per translator actor: a GPU each, or an equal share of the CPUs that leaves
    a quarter CPU free on every node for the light read tasks feeding them (a node filled by
    actors would stall the pipeline: its reads could never be scheduled)."""
    if use_gpu:
        return {"num_gpus": 1, "num_cpus": 0}
    cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")] or [1.0]
    reserve = LIGHT_TASK["num_cpus"]
    share = max(0.1, (sum(cpus) - reserve * len(cpus)) / num_actors)
    while (
        share > 0.1 and sum(int((c - reserve) // share) for c in cpus if c > reserve) < num_actors
    ):
        share *= 0.9  # uneven nodes: shrink the share until the actors fit
    return {"num_cpus": round(max(share, 0.1), 3)}


def actor_threads(num_actors: int, use_gpu: bool) -> int:
    """Torch threads per translator actor: its share of the CPUs, rounded (at least one)."""
    if use_gpu:
        return 1
    return max(1, round(actor_resources(num_actors, use_gpu)["num_cpus"]))


def default_actors(use_gpu: bool) -> int:
    """One translator actor per GPU with use_gpu, else one per CPU of the cluster."""
    resources = ray.available_resources()
    if use_gpu:
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", os.cpu_count() or 1)))
