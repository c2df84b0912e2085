"""Translation: the `Translator` Python API and Ray Data bulk translation of whole corpora.

Bulk translation: read (CSV/TSV/Parquet/text, job.reader) -> map_batches(TranslateActor, actor
pool; each actor loads the checkpoint once) -> one output row per input row, in input order,
written in parts that land atomically, so an interrupted run resumes where it stopped. Output
columns: id, source, translation, score, status (+ reference when asked for). Status: ok,
truncated (source over data.max_length), empty_source, missing_source, or the reason the row
could not be parsed (then source holds the raw line).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from job import storage
from job.checkpoint import local_checkpoint, read_checkpoint
from job.data import LIGHT_TASK, OK, Corpus, DataError, normalise, open_corpus
from job.evaluate import score
from job.reader import FILE, LINE, RAW, ROW, STATUS
from job.search import decode_ids


@dataclass
class Translation:
    text: str
    score: float          # log-probability of the output (EOS included)
    status: str = OK      # ok | empty_source | missing_source | truncated


class Translator:
    """Loads a checkpoint once and translates lists of sentences.

    >>> Translator.from_checkpoint("runs/sample/checkpoint_...").translate(["Save file"])
    [Translation(text='Enregistrer le fichier', score=-0.41, status='ok')]
    """

    def __init__(self, model, vocab, cfg, device: str | torch.device = "cpu"):
        self.model, self.vocab, self.cfg, self.device = model.eval(), vocab, cfg, torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str, device: str | None = None, threads: int | None = None) -> "Translator":
        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with local_checkpoint(path) as d:
            loaded = read_checkpoint(d)
            model = loaded.model(device)
        return cls(model, loaded.vocab, loaded.cfg, device)

    def translate(self, sentences: list[str], beam: int | None = None, batch_size: int | None = None) -> list[Translation]:
        """Translate raw sentences; every input gets exactly one Translation, in order.

        beam: beam width (default: the checkpoint's translate.beam_size; 1 = greedy).
        """
        texts = [normalise(s) if isinstance(s, str) else None for s in sentences]
        todo = [i for i, t in enumerate(texts) if t]
        out = [Translation("", 0.0, "missing_source" if t is None else "empty_source") for t in texts]
        if not todo:
            return out
        ids = self.vocab.encode_src([texts[i] for i in todo])
        decoded = decode_ids(self.model, ids, batch_size=batch_size or self.cfg.translate.batch_size,
                             max_src_len=self.cfg.data.max_length, max_length_ratio=self.cfg.translate.max_length_ratio,
                             device=self.device, beam=beam or self.cfg.translate.beam_size,
                             length_penalty=self.cfg.translate.length_penalty)
        hyps = self.vocab.decode_tgt(decoded.ids)
        for k, i in enumerate(todo):
            out[i] = Translation(hyps[k], float(decoded.scores[k]), "truncated" if decoded.truncated[k] else OK)
        return out


PART_ROWS = 20_000
_PART_NAME = re.compile(r"^part-(\d{5}-\d{6})\.(parquet|csv)$")
JOB_FILE, DONE_FILE = "_job.json", "_SUCCESS.json"


class TranslateActor:
    """Ray Data callable class: one Translator per actor (checkpoint loaded once), reused for every
    batch. Tags each row with its output part; rows of parts already written (`skip`) pass
    through undecoded."""

    def __init__(self, checkpoint: str, source_column: str, threads: int, batch_size: int | None, beam: int | None,
                 file_index: dict[str, int] | None = None, part_rows: int = PART_ROWS, skip: frozenset = frozenset()):
        self.translator = Translator.from_checkpoint(checkpoint, threads=threads)
        self.source_column, self.batch_size, self.beam = source_column, batch_size, beam
        self.file_index, self.part_rows, self.skip = file_index or {}, part_rows, skip

    def __call__(self, table: pa.Table) -> pa.Table:
        files = table.column(FILE).to_pylist()
        rows = table.column(ROW).to_pylist()
        parts = [f"{self.file_index.get(f, 0):05d}-{r // self.part_rows:06d}" for f, r in zip(files, rows)]
        parsed = table.column(STATUS).to_pylist()
        raw = table.column(RAW).to_pylist()
        sources = table.column(self.source_column).to_pylist()
        todo = [i for i, (part, st) in enumerate(zip(parts, parsed)) if st is None and part not in self.skip]
        text: list = [None] * len(parts)
        score: list = [None] * len(parts)
        status = list(parsed)  # a parse reason, or None (skipped) until translated
        for i, r in zip(todo, self.translator.translate([sources[i] for i in todo], self.beam, self.batch_size)):
            text[i], score[i], status[i] = r.text, r.score, r.status
        for i, st in enumerate(parsed):
            if st is not None:  # unparseable row: one output row all the same, source = the raw line
                text[i], score[i] = "", 0.0
                sources[i] = raw[i]
        table = table.drop_columns([c for c in (FILE, ROW, LINE, STATUS, RAW) if c in table.column_names])
        table = table.set_column(table.schema.get_field_index(self.source_column), self.source_column, pa.array(sources, pa.string()))
        return table.append_column("translation", pa.array(text, pa.string())) \
            .append_column("score", pa.array(score, pa.float64())) \
            .append_column("status", pa.array(status, pa.string())) \
            .append_column("_part", pa.array(parts, pa.string()))


def bulk_translate(checkpoint: str, input_path: str, output: str, *, column: str = "source", id_column: str | None = None,
                   reference_column: str | None = None, num_actors: int = 1, use_gpu: bool = False,
                   batch_size: int = 128, beam: int | None = None, progress: bool = True,
                   part_rows: int = PART_ROWS, output_format: str | None = None) -> dict:
    """Translate every row of a corpus and write it in input order, resumably.

    output: a directory of parts (part-FFFFF-CCCCCC.parquet, or .csv with output_format="csv"),
    or a single .parquet/.csv/.tsv file, assembled from parts kept in OUTPUT.parts/ until done.
    A part holds up to `part_rows` consecutive rows of one input file and lands atomically
    (written aside, then renamed); a re-run of the same job skips the parts already there.
    id: `id_column` (default: an `id` column when every file has one), else the row's 0-based
    position in the whole input. Returns rows, counts by status, and BLEU/chrF when
    `reference_column` is given.
    """
    import ray.data

    corpus = open_corpus(input_path, [column] + ([reference_column] if reference_column else []),
                         optional_columns=(id_column or "id",), plain_text_column=column)
    if id_column and id_column not in corpus.optional:
        raise DataError(f"{input_path}: id column {id_column!r} not found in every file")
    id_column = corpus.optional[0] if corpus.optional else None
    single = output.lower().endswith((".parquet", ".pq", ".csv", ".tsv"))
    fmt = "csv" if (output.lower().endswith((".csv", ".tsv")) if single else output_format == "csv") else "parquet"
    parts_dir = output + ".parts" if single else output
    job = {"input": input_path, "files": corpus.files, "column": column, "id_column": id_column,
           "reference_column": reference_column, "checkpoint": checkpoint, "beam": beam, "part_rows": part_rows, "format": fmt}
    done = _start_parts(parts_dir, job)

    # Blocks of one actor call each (8 decoding batches, at least 1,024 rows): a single large
    # file still feeds every actor, and each call sorts enough rows by length to batch well.
    rows_per_call = max(1024, batch_size * 8)
    ds = corpus.dataset(rows_per_block=rows_per_call)
    ds.context.execution_options.preserve_order = True
    ds = ds.map_batches(
        TranslateActor,
        fn_constructor_kwargs={"checkpoint": checkpoint, "source_column": column, "threads": actor_threads(num_actors, use_gpu),
                               "batch_size": batch_size, "beam": beam, "part_rows": part_rows, "skip": frozenset(done),
                               "file_index": {f: i for i, f in enumerate(corpus.files)}},
        batch_size=rows_per_call, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        **actor_resources(num_actors, use_gpu),
    )
    total_rows = count_rows(corpus) if progress else None
    writer = _PartWriter(parts_dir, fmt, done)
    seen, started = 0, time.perf_counter()
    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        n = table.num_rows
        ids = table.column(id_column) if id_column else pa.array(range(seen, seen + n), pa.int64())
        cols = {"id": ids, "source": table.column(column), "translation": table.column("translation"),
                "score": table.column("score"), "status": table.column("status")}
        if reference_column:
            cols["reference"] = table.column(reference_column)
        writer.add(table.column("_part").to_pylist(), pa.table(cols))
        seen += n
        if progress:
            print("\r" + progress_line(seen, total_rows, time.perf_counter() - started), end="", file=sys.stderr, flush=True)
    writer.close()
    finished = time.perf_counter()
    if progress and seen:
        print(file=sys.stderr)
    parts = sorted(name for name in storage.list_dir(parts_dir) if _PART_NAME.match(name))
    result = {"output": output, "rows": 0, "status": {}, "parts": len(parts), "parts_resumed": len(done),
              "parts_written": writer.written, "wall_s": round(finished - started, 2)}
    hyps, refs = [], []
    for table in _read_parts(parts_dir, parts, fmt, ["status", "translation"] + (["reference"] if reference_column else [])):
        result["rows"] += table.num_rows
        for st in table.column("status").to_pylist():
            result["status"][st] = result["status"].get(st, 0) + 1
        if reference_column:
            for st, h, r in zip(table.column("status").to_pylist(), table.column("translation").to_pylist(),
                                table.column("reference").to_pylist()):
                ref = normalise(r)
                if ref and st in (OK, "truncated"):
                    hyps.append(h)
                    refs.append(ref)
    if result["rows"] != seen:
        raise RuntimeError(f"{parts_dir}: the parts hold {result['rows']} rows but the input has {seen}")
    if single:
        _assemble(parts_dir, parts, fmt, output)
    else:
        storage.write_text(storage.join(parts_dir, DONE_FILE), json.dumps({"rows": result["rows"], "status": result["status"]}))
    if reference_column:
        result["scores"] = score(hyps, refs)
    return result


def _start_parts(parts_dir: str, job: dict) -> set[str]:
    """Parts already written by an earlier run of the same job (keys like 00000-000003); refuses
    a directory holding another job's parts; removes leftovers of interrupted writes."""
    names = storage.list_dir(parts_dir)
    job_path = storage.join(parts_dir, JOB_FILE)
    if names:
        if JOB_FILE not in names:
            raise DataError(f"output {parts_dir} exists and is not a translation output of this command; choose another --output")
        old = json.loads(storage.read_text(job_path))
        changed = [k for k in job if old.get(k) != job[k]]
        if changed:
            raise DataError(f"output {parts_dir} holds parts of a different translation job ({', '.join(changed)} differ); "
                            f"use another --output or delete it")
    storage.makedirs(parts_dir)
    for name in names:
        if ".tmp-" in name or name == DONE_FILE:
            storage.delete(storage.join(parts_dir, name))
    storage.write_text(job_path, json.dumps(job, indent=1))
    return {m.group(1) for m in map(_PART_NAME.match, names) if m}


class _PartWriter:
    """Buffers consecutive rows of one part and writes each part when the next one starts (rows
    arrive in input order, so a part is complete then). Parts in `done` are dropped."""

    def __init__(self, parts_dir: str, fmt: str, done: set[str]):
        self.dir, self.fmt, self.done = parts_dir, fmt, done
        self.key, self.tables, self.flushed, self.written = None, [], set(), 0

    def add(self, keys: list[str], table: pa.Table) -> None:
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                self._take(keys[start], table.slice(start, i - start))
                start = i

    def _take(self, key: str, table: pa.Table) -> None:
        if key != self.key:
            self._flush()
            if key in self.flushed:
                raise RuntimeError(f"rows of output part {key} arrived out of order")
            self.key = key
        if key not in self.done:
            self.tables.append(table)

    def _flush(self) -> None:
        if self.key is not None and self.tables:
            table = pa.concat_tables(self.tables)
            with storage.open_output(storage.join(self.dir, f"part-{self.key}.{self.fmt}")) as sink:
                _write_table(sink, table, self.fmt)
            self.written += 1
        if self.key is not None:
            self.flushed.add(self.key)
        self.tables = []

    def close(self) -> None:
        self._flush()
        self.key = None


def _write_table(sink, table: pa.Table, fmt: str) -> None:
    if fmt == "csv":
        pacsv.write_csv(table, sink)
    else:
        pq.write_table(table, sink)


def _read_parts(parts_dir: str, parts: list[str], fmt: str, columns: list[str] | None = None):
    for name in parts:
        fs, p = storage.fs_and_path(storage.join(parts_dir, name))
        if fmt == "csv":
            with fs.open_input_stream(p) as f:
                table = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                    column_types={"source": pa.string(), "translation": pa.string(), "status": pa.string(), "reference": pa.string()},
                    include_columns=columns))
        else:
            with fs.open_input_file(p) as f:
                table = pq.read_table(f, columns=columns)
        yield table


def _assemble(parts_dir: str, parts: list[str], fmt: str, output: str) -> None:
    """Concatenate the parts into the single output file (written aside, renamed), then remove them."""
    with storage.open_output(output) as sink:
        writer = None
        for table in _read_parts(parts_dir, parts, fmt):
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema) if fmt == "csv" else pq.ParquetWriter(sink, table.schema)
            writer.write_table(table)
        if writer is None:  # no rows: still a valid, empty file
            schema = pa.schema([("id", pa.int64()), ("source", pa.string()), ("translation", pa.string()),
                                ("score", pa.float64()), ("status", pa.string())])
            writer = pacsv.CSVWriter(sink, schema) if fmt == "csv" else pq.ParquetWriter(sink, schema)
        writer.close()
    storage.delete_dir(parts_dir)


def progress_line(done: int, total: int | None, elapsed: float, width: int = 30) -> str:
    """`[translate] [#####.....]  50%  500/1,000 rows  120 rows/s  eta 4s` (no bar when the total is unknown)."""
    rate = done / max(elapsed, 1e-9)
    if not total:
        return f"[translate] {done:,} rows  {rate:,.0f} rows/s  {elapsed:.0f}s"
    frac = min(done / total, 1.0)
    bar = "#" * int(frac * width) + "." * (width - int(frac * width))
    eta = (total - done) / rate if rate > 0 else float("inf")
    return f"[translate] [{bar}] {frac:4.0%}  {done:,}/{total:,} rows  {rate:,.0f} rows/s  eta {eta:.0f}s"


def count_rows(corpus: Corpus) -> int | None:
    """Rows in a local corpus, cheaply (Parquet metadata; lines for CSV/TSV/text, minus headers),
    for the progress bar; None when unknown (remote inputs, compressed files)."""
    total = 0
    for f in corpus.files:
        if "://" in f:
            return None
        if corpus.fmt == "parquet":
            total += pq.ParquetFile(f).metadata.num_rows
        elif f.endswith((".gz", ".bz2")):
            return None
        else:
            lines, last = 0, b"\n"
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    lines, last = lines + chunk.count(b"\n"), chunk[-1:]
            # A last line without a newline still counts; CSV/TSV headers do not. (Quoted
            # newlines inside CSV fields make this an over-estimate: it only drives the bar.)
            total += lines + (last != b"\n") - (0 if corpus.fmt == "text" else 1)
    return total


def actor_resources(num_actors: int, use_gpu: bool) -> dict:
    """Ray resources per translator actor: a GPU each, or an equal share of the CPUs that leaves
    a quarter CPU free on every node for the light read tasks feeding them (a node filled by
    actors would stall the pipeline: its reads could never be scheduled)."""
    import ray

    if use_gpu:
        return {"num_gpus": 1, "num_cpus": 0}
    cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")] or [1.0]
    reserve = LIGHT_TASK["num_cpus"]
    share = max(0.1, (sum(cpus) - reserve * len(cpus)) / num_actors)
    while share > 0.1 and sum(int((c - reserve) // share) for c in cpus if c > reserve) < num_actors:
        share *= 0.9  # uneven nodes: shrink the share until the actors fit
    return {"num_cpus": round(max(share, 0.1), 3)}


def actor_threads(num_actors: int, use_gpu: bool) -> int:
    """Torch threads per translator actor: its share of the CPUs, rounded (at least one)."""
    if use_gpu:
        return 1
    return max(1, round(actor_resources(num_actors, use_gpu)["num_cpus"]))


def default_actors(use_gpu: bool) -> int:
    import ray

    resources = ray.available_resources()
    if use_gpu:
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", os.cpu_count() or 1)))
