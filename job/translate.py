"""Translation: the `Translator` Python API and Ray Data bulk translation of whole corpora.

Bulk translation: read (CSV/TSV/Parquet/text) -> map_batches(TranslateActor, actor pool; each
actor loads the checkpoint once) -> one output row per input row, in input order, written to a
temporary file and renamed into place. Output columns: id, source, translation, score, status
(+ reference when the input has one).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from job import storage
from job.checkpoint import local_checkpoint, read_checkpoint
from job.data import LIGHT_TASK, OK, normalise, read_table_dataset
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


class TranslateActor:
    """Ray Data callable class: one Translator per actor, reused for every batch."""

    def __init__(self, checkpoint: str, source_column: str, threads: int, batch_size: int | None, beam: int | None):
        self.translator = Translator.from_checkpoint(checkpoint, threads=threads)
        self.source_column, self.batch_size, self.beam = source_column, batch_size, beam

    def __call__(self, table: pa.Table) -> pa.Table:
        results = self.translator.translate(table.column(self.source_column).to_pylist(), self.beam, self.batch_size)
        return table.append_column("translation", pa.array([r.text for r in results], pa.string())) \
            .append_column("score", pa.array([r.score for r in results], pa.float64())) \
            .append_column("status", pa.array([r.status for r in results], pa.string()))


def bulk_translate(checkpoint: str, ds, output: str, *, source_column: str = "source", id_column: str | None = None,
                   reference_column: str | None = None, num_actors: int = 1, use_gpu: bool = False,
                   batch_size: int = 128, beam: int | None = None, progress: bool = True,
                   total_rows: int | None = None) -> dict:
    """Translate every row of Ray Dataset `ds` and write `output` (.parquet or .csv) in input order.

    Returns counts by status and, when `reference_column` is set, the references and hypotheses.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    keep = [c for c in (id_column, source_column, reference_column) if c]
    ds = ds.select_columns(keep, **LIGHT_TASK)
    ds = ds.map_batches(
        TranslateActor,
        fn_constructor_kwargs={"checkpoint": checkpoint, "source_column": source_column, "threads": 1, "batch_size": batch_size, "beam": beam},
        batch_size=batch_size * 8, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        **actor_resources(num_actors, use_gpu),
    )
    fmt = "csv" if output.lower().endswith((".csv", ".tsv")) else "parquet"
    counts: dict[str, int] = {}
    hyps, refs = [], []
    next_id, started = 0, time.perf_counter()
    with storage.open_output(output) as sink:
        writer = None
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            n = table.num_rows
            ids = table.column(id_column) if id_column else pa.array(range(next_id, next_id + n), pa.int64())
            next_id += n
            cols = {"id": ids, "source": table.column(source_column), "translation": table.column("translation"),
                    "score": table.column("score"), "status": table.column("status")}
            if reference_column:
                cols["reference"] = table.column(reference_column)
                refs += table.column(reference_column).to_pylist()
                hyps += table.column("translation").to_pylist()
            out = pa.table(cols)
            for st in table.column("status").to_pylist():
                counts[st] = counts.get(st, 0) + 1
            if writer is None:
                writer = pacsv.CSVWriter(sink, out.schema) if fmt == "csv" else pq.ParquetWriter(sink, out.schema)
            writer.write_table(out)
            if progress:
                print("\r" + progress_line(next_id, total_rows, time.perf_counter() - started), end="", file=sys.stderr, flush=True)
        if writer is None:  # empty input: still write a valid, empty file
            schema = pa.schema([("id", pa.int64()), ("source", pa.string()), ("translation", pa.string()),
                                ("score", pa.float64()), ("status", pa.string())])
            writer = pacsv.CSVWriter(sink, schema) if fmt == "csv" else pq.ParquetWriter(sink, schema)
        writer.close()
    if progress and next_id:
        print(file=sys.stderr)
    return {"rows": next_id, "status": counts, "hypotheses": hyps, "references": refs, "output": output}


def progress_line(done: int, total: int | None, elapsed: float, width: int = 30) -> str:
    """`[translate] [#####.....]  50%  500/1,000 rows  120 rows/s  eta 4s` (no bar when the total is unknown)."""
    rate = done / max(elapsed, 1e-9)
    if not total:
        return f"[translate] {done:,} rows  {rate:,.0f} rows/s  {elapsed:.0f}s"
    frac = min(done / total, 1.0)
    bar = "#" * int(frac * width) + "." * (width - int(frac * width))
    eta = (total - done) / rate if rate > 0 else float("inf")
    return f"[translate] [{bar}] {frac:4.0%}  {done:,}/{total:,} rows  {rate:,.0f} rows/s  eta {eta:.0f}s"


def count_rows(path: str) -> int | None:
    """Rows in a local input, cheaply (Parquet metadata; lines for CSV/TSV/text, minus headers),
    for the progress bar; None when unknown (remote inputs, compressed files)."""
    from job.data import _is_remote, _local_files, detect_format

    if _is_remote(path):
        return None
    files = _local_files(path)
    fmt = detect_format(path, files)
    total = 0
    for f in files:
        if fmt == "parquet":
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
            total += lines + (last != b"\n") - (0 if fmt == "text" else 1)
    return total


def actor_resources(num_actors: int, use_gpu: bool) -> dict:
    """Ray resources per translator actor: a GPU each, or up to one CPU each while leaving a
    little CPU for the light read/filter tasks that feed them (else the pipeline can stall)."""
    import ray

    if use_gpu:
        return {"num_gpus": 1, "num_cpus": 0}
    total = ray.cluster_resources().get("CPU", 1.0)
    reserve = LIGHT_TASK["num_cpus"]
    return {"num_cpus": min(1.0, max(0.1, (total - reserve) / num_actors))}


def default_actors(use_gpu: bool) -> int:
    import ray

    resources = ray.available_resources()
    if use_gpu:
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", os.cpu_count() or 1)))


def read_for_translation(path: str, column: str, extra: list[str]):
    """Ray Dataset of the input, text columns as strings; plain text files become `column`."""
    return read_table_dataset(path, [column, *extra], plain_text_column=column)
