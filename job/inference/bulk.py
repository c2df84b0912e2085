"""Bulk jobs over whole corpora with Ray Data: translate (beam, n-best, sampling, alignments) or
score source-target pairs.

read (CSV/TSV/Parquet/text, job.corpus.parsers) -> map_batches(BulkActor, actor pool; each actor
loads the checkpoint once and runs a job.inference.tasks.Task) -> one output row per input row, in
input order, written in parts that land atomically (job.inference.outputs), so an interrupted run
resumes where it stopped. Every row gets a `status`: ok, truncated (source over data.max_length),
empty_source, missing_source (score: also empty_target, missing_target), or the reason the row
could not be parsed (then source holds the raw line).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass

import pyarrow as pa
import ray
import ray.data
from tqdm import tqdm

from job.bleu import CorpusScorer
from job.config import ParallelFiles
from job.corpus.datasource import FILE, LINE, RAW, ROW, STATUS
from job.corpus.files import Corpus, open_corpus
from job.corpus.normalise import OK, normalise
from job.errors import DataError
from job.inference import outputs, tasks
from job.runtime import LIGHT_TASK


@dataclass
class BulkOptions:
    task: str = "translate"  # or "score"
    column: str = "source"  # source text column
    target_column: str = "target"  # score: the target text column
    id_column: str | None = (
        None  # default: an `id` column when every file has one, else row numbers
    )
    reference_column: str | None = None  # translate: score BLEU/chrF against this column
    reverse_checkpoint: str | None = None  # score: a target->source model as well
    num_actors: int = 1
    use_gpu: bool = False
    batch_size: int = 128  # sentences per decoding batch
    batch_tokens: int | None = None  # or source tokens per batch (score: pair tokens)
    beam: int | None = None  # default: the checkpoint's translate.beam_size
    length_penalty: float | None = None  # default: the checkpoint's
    max_length_ratio: float | None = None  # default: the checkpoint's
    nbest: int = 1
    sampling: str | None = None  # "topk:K" or "topp:P"
    temperature: float = 1.0
    seed: int = 0
    alignments: bool = False
    progress: bool = True  # a progress bar on stderr
    part_rows: int = outputs.PART_ROWS  # rows per output part, the unit of resuming
    output_format: str | None = None  # "csv" or "parquet" parts, for a directory output

    def job_spec(self) -> dict:
        """What must not change between a run and its resume (not the resources or batching)."""
        skip = {"num_actors", "use_gpu", "batch_size", "batch_tokens", "progress", "output_format"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


class BulkActor:
    """Ray Data callable class: one job.inference.tasks.Task per actor (checkpoint loaded once),
    reused for every block. Tags each row with its output part; rows of parts already written
    (`skip`) and unparseable rows pass through unprocessed."""

    def __init__(
        self,
        checkpoint: str,
        opts: BulkOptions,
        threads: int,
        file_index: dict,
        skip: frozenset,
        id_column: str | None = None,
    ):
        self.task = tasks.Task(checkpoint, opts, threads)
        self.opts, self.file_index, self.skip, self.id_column = opts, file_index, skip, id_column

    def __call__(self, table: pa.Table) -> pa.Table:
        o = self.opts
        numbers = [self.file_index.get(f, 0) for f in table.column(FILE).to_pylist()]
        rows = table.column(ROW).to_pylist()
        keys = [outputs.part_key(f, r, o.part_rows) for f, r in zip(numbers, rows)]
        parsed = table.column(STATUS).to_pylist()
        todo = [
            i for i, (k, st) in enumerate(zip(keys, parsed)) if st is None and k not in self.skip
        ]
        text_columns = [o.column] + ([o.target_column] if o.task == "score" else [])
        texts = {c: table.column(c).to_pylist() for c in text_columns}
        out = tasks.empty_values(o, table.num_rows)
        out["status"] = list(parsed)  # a parse reason, or None (skipped part) unless processed
        # a row's random stream (sampling) is keyed by its id (else its file and row): the same
        # on any actor, in any batch
        if self.id_column:
            ids = table.column(self.id_column).to_pylist()
            row_keys = [f"id:{ids[i]}" for i in todo]
        else:
            row_keys = [f"{numbers[i]}:{rows[i]}" for i in todo]
        done = self.task.run({c: [v[i] for i in todo] for c, v in texts.items()}, row_keys)
        for name, values in done.items():
            for i, value in zip(todo, values):
                out[name][i] = value
        raw = table.column(RAW).to_pylist()
        sources = [
            raw[i] if st is not None else s
            for i, (s, st) in enumerate(zip(texts[o.column], parsed))
        ]
        table = table.drop_columns(
            [c for c in (FILE, ROW, LINE, STATUS, RAW) if c in table.column_names]
        )
        at = table.schema.get_field_index(o.column)
        table = table.set_column(at, o.column, pa.array(sources, pa.string()))
        for name, kind in tasks.output_columns(o):
            table = table.append_column(name, pa.array(out[name], kind))
        return table.append_column("_part", pa.array(keys, pa.string()))


def bulk_translate(
    checkpoint: str,
    input_path: str | ParallelFiles,
    output: str,
    options: BulkOptions | None = None,
    **kwargs,
) -> dict:
    """Translate every row of a corpus and write it in input order, resumably (see bulk_job).
    Options: BulkOptions, or its fields as keyword arguments (they override `options`)."""
    return bulk_job(checkpoint, input_path, output, _options("translate", options, kwargs))


def bulk_score(
    checkpoint: str,
    input_path: str | ParallelFiles,
    output: str,
    options: BulkOptions | None = None,
    **kwargs,
) -> dict:
    """Score every source-target pair of a corpus, in input order, resumably (see bulk_job)."""
    return bulk_job(checkpoint, input_path, output, _options("score", options, kwargs))


def _options(task: str, options: BulkOptions | None, overrides: dict) -> BulkOptions:
    return dataclasses.replace(options or BulkOptions(), task=task, **overrides)


def bulk_job(
    checkpoint: str, input_path: str | ParallelFiles, output: str, opts: BulkOptions
) -> dict:
    """Run a task over every row of a corpus; write one row per input row, in input order.

    output: a directory of parts (part-FFFFF-CCCCCC.parquet, or .csv with output_format="csv"),
    or a single .parquet/.csv/.tsv file, assembled from parts kept in OUTPUT.parts/ until done.
    A re-run of the same job skips the parts already there (job.inference.outputs). id: the id
    column, else the row's 0-based position in the whole input. Returns rows, counts by status, and
    BLEU/chrF when a reference column is given (computed part by part: memory stays flat).
    """
    text_columns = [opts.column] + ([opts.target_column] if opts.task == "score" else [])
    wanted = text_columns + ([opts.reference_column] if opts.reference_column else [])
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
        "input": str(input_path),
        "files": corpus.files,
        **opts.job_spec(),
        "id_column": id_column,
        "checkpoint": checkpoint,
        "format": fmt,
    }
    done = outputs.start_parts(parts_dir, job)

    # process, writing each part as soon as its last row arrives
    total = corpus.count_rows()
    ds = _pipeline(corpus, checkpoint, opts, done, total, id_column)
    writer = outputs.PartWriter(parts_dir, fmt, done)
    bar = tqdm(
        total=total, desc=f"[{opts.task}]", unit=" rows", file=sys.stderr, disable=not opts.progress
    )
    names = [name for name, _ in tasks.output_columns(opts)]
    seen, started = 0, time.perf_counter()
    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        n = table.num_rows
        ids = table.column(id_column) if id_column else pa.array(range(seen, seen + n), pa.int64())
        cols = {"id": ids, "source": table.column(opts.column)}
        if opts.task == "score":
            cols["target"] = table.column(opts.target_column)
        cols.update({c: table.column(c) for c in names})
        if opts.reference_column:
            cols["reference"] = table.column(opts.reference_column)
        out = pa.table(cols)
        writer.add(
            table.column("_part").to_pylist(), tasks.to_csv_cell(out) if fmt == "csv" else out
        )
        seen += n
        bar.update(n)
    writer.close()
    bar.close()
    finished = time.perf_counter()

    # count what the parts hold (resumed ones included), then assemble or mark done
    found = outputs.list_parts(parts_dir)
    result = {
        "output": output, "rows": 0, "status": {}, "parts": len(found), "parts_resumed": len(done),
        "parts_written": writer.written, "wall_s": round(finished - started, 2),
    }  # fmt: skip
    scorer = _tally(parts_dir, found, fmt, opts, result)
    if result["rows"] != seen:
        raise DataError(
            f"{parts_dir}: the parts hold {result['rows']} rows but the input has {seen} "
            "(did the input change since the parts were written?); "
            f"delete {parts_dir} and run again"
        )
    if single:
        outputs.assemble(parts_dir, found, fmt, output, _empty_schema(opts, fmt))
    else:
        outputs.mark_done(parts_dir, {"rows": result["rows"], "status": result["status"]})
    if scorer is not None:
        result["scores"] = scorer.result()
    return result


def _pipeline(
    corpus: Corpus,
    checkpoint: str,
    opts: BulkOptions,
    done: set[str],
    total: int | None,
    id_column: str | None,
) -> ray.data.Dataset:
    """The corpus read in blocks of one actor call each (8 decoding batches, at least 1,024 rows;
    smaller when the input is small, so that every actor gets a share), mapped by the actor
    pool, in input order."""
    rows_per_call = block_rows(total, opts.num_actors, opts.batch_size)
    ds = corpus.dataset(rows_per_block=rows_per_call)
    ds.context.execution_options.preserve_order = True
    constructor = {
        "checkpoint": checkpoint, "opts": opts,
        "threads": actor_threads(opts.num_actors, opts.use_gpu),
        "file_index": {f: i for i, f in enumerate(corpus.files)}, "skip": frozenset(done),
        "id_column": id_column,
    }  # fmt: skip
    return ds.map_batches(
        BulkActor,
        fn_constructor_kwargs=constructor,
        batch_size=rows_per_call,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=opts.num_actors),
        **actor_resources(opts.num_actors, opts.use_gpu),
    )


def block_rows(total: int | None, num_actors: int, batch_size: int) -> int:
    """Rows per block (one actor call): 8 decoding batches, at least 1,024, but no more than an
    equal share of a known input, so that a 3,000-row test set still feeds 8 actors."""
    rows = max(1024, batch_size * 8)
    if total:
        rows = max(16, min(rows, math.ceil(total / num_actors)))
    return rows


def _tally(
    parts_dir: str, found: list[str], fmt: str, opts: BulkOptions, result: dict
) -> CorpusScorer | None:
    """Rows and statuses into `result`, part by part; BLEU/chrF statistics with a reference."""
    scorer = CorpusScorer() if opts.reference_column else None
    columns = ["status"] + (["translation", "reference"] if scorer else [])
    for table in outputs.read_parts(parts_dir, found, fmt, columns):
        result["rows"] += table.num_rows
        statuses = table.column("status").to_pylist()
        for st in statuses:
            result["status"][st] = result["status"].get(st, 0) + 1
        if scorer is not None:
            pairs = zip(
                statuses,
                table.column("translation").to_pylist(),
                table.column("reference").to_pylist(),
            )
            kept = [
                (h, normalise(r)) for st, h, r in pairs if st in (OK, "truncated") and normalise(r)
            ]
            scorer.add([h for h, _ in kept], [r for _, r in kept])
    return scorer


def _empty_schema(opts: BulkOptions, fmt: str) -> pa.Schema:
    fields = [("id", pa.int64()), ("source", pa.string())]
    fields += [("target", pa.string())] if opts.task == "score" else []
    for name, kind in tasks.output_columns(opts):
        fields.append((name, pa.string() if fmt == "csv" and pa.types.is_list(kind) else kind))
    return pa.schema(fields)


def actor_resources(num_actors: int, use_gpu: bool) -> dict:
    """Ray resources per actor: a GPU each, or an equal share of the CPUs that leaves a quarter
    CPU free on every node for the light read tasks feeding them (a node filled by actors would
    stall the pipeline: its reads could never be scheduled)."""
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
    """Torch threads per actor: its share of the CPUs, rounded (at least one)."""
    if use_gpu:
        return 1
    return max(1, round(actor_resources(num_actors, use_gpu)["num_cpus"]))


def default_actors(use_gpu: bool) -> int:
    """One actor per GPU with use_gpu, else one per CPU of the cluster."""
    resources = ray.available_resources()
    if use_gpu:
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", os.cpu_count() or 1)))
