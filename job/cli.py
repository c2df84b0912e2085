"""Command line: `python -m job <command>` or `seq2seq <command>`.

    train      read the corpus, build the vocabulary, train with Ray Train (DDP), score the
               test split
    translate  bulk-translate a corpus with a checkpoint (Ray Data): beam, n-best, sampling,
               alignments; with no --input, stdin to stdout in this process (no Ray)
    score      log-probabilities of given source-target pairs (Ray Data)
    evaluate   translate a corpus with references and print BLEU / chrF with sacrebleu's signatures
    report     plots and a Markdown summary of a finished (or running) run

The last line each command prints on stdout is one JSON object (for scripts and CI); translate
from stdin prints it on stderr, stdout holding the translations alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from job.config import load_config
from job.errors import ConfigError, not_found_message, user_error_of

DEFAULT_CONFIG = "configs/sample.yaml"


def _add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local cluster)",
    )
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and progress bars")
    p.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs of the embedded local cluster (default: all of this machine's)",
    )


def _add_output_args(p: argparse.ArgumentParser, stream: bool = False) -> None:
    p.add_argument(
        "--output",
        required=not stream,
        help="output directory of resumable parts (Parquet, or CSV with --format csv), "
        "or one .parquet/.csv file"
        + (" (leave out with --input to write stdout)" if stream else ""),
    )
    p.add_argument(
        "--format",
        choices=["parquet", "csv", *(["text", "jsonl"] if stream else [])],
        default=None,
        help="part format for a directory output (default: parquet)"
        + ("; from stdin: text (default) or jsonl" if stream else ""),
    )
    p.add_argument(
        "--part-rows",
        type=int,
        default=None,
        help="rows per output part, the unit of resuming (default: 20000)",
    )
    p.add_argument(
        "--id-column",
        default=None,
        help="column carried through as id (default: 'id' if present, else row numbers)",
    )


def _add_search_args(p: argparse.ArgumentParser) -> None:
    """Decoding choices at translate time (the checkpoint's translate.* settings otherwise)."""
    p.add_argument("--length-penalty", type=float, default=None, help="GNMT length penalty alpha")
    p.add_argument(
        "--max-length-ratio", type=float, default=None, help="longest output = ratio x source + 10"
    )
    p.add_argument(
        "--nbest", type=int, default=1, help="also output the N best hypotheses (beam search)"
    )
    p.add_argument(
        "--sampling",
        default=None,
        metavar="topk:K|topp:P",
        help="sample one translation per row (back-translation) instead of searching",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed: a row's sample depends on it and the row",
    )
    p.add_argument(
        "--alignments",
        action="store_true",
        help="per output token, the source token it attends to most",
    )


def _add_decoding_args(p: argparse.ArgumentParser) -> None:
    """The actor pool and batching options every bulk command shares."""
    p.add_argument(
        "--actors",
        type=int,
        default=None,
        help="translator actors (default: one per CPU, or per GPU with --gpu)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sentences per decoding batch (default: the checkpoint's translate.batch_size)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help="batches of about this many source tokens instead (score: source + target)",
    )
    p.add_argument(
        "--beam",
        type=int,
        default=None,
        help="beam width (default: the checkpoint's translate.beam_size; 1 = greedy)",
    )
    p.add_argument("--gpu", action="store_true", help="one GPU per translator actor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seq2seq",
        description="LSTM encoder-decoder translation trained with PyTorch DDP on Ray.",
        epilog="Run `seq2seq <command> --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser(
        "train",
        help="train a model and score it on the test split",
        description="Read the corpus with Ray Data, build the shared vocabulary once, train the "
        "LSTM encoder-decoder with Ray Train workers under DDP, keep checkpoints in "
        "storage_path/name, then bulk-translate the test split and print BLEU/chrF.",
    )
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"YAML run config (default: {DEFAULT_CONFIG})"
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override config keys, e.g. --set train.lr=5e-4 scaling.num_workers=1 (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run storage_path/name from its latest checkpoint",
    )
    _add_ray_args(p)

    p = sub.add_parser(
        "translate",
        help="bulk-translate a corpus with a checkpoint",
        description="Translate every row of a CSV/TSV/Parquet/text corpus with Ray Data; writes "
        "one output row per input row (id, source, translation, score, status) in input order. "
        "With no --input (or --input -): read sentences from stdin and write their translations "
        "to stdout, line by line, in this process without Ray.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local path or URI)")
    p.add_argument(
        "--input",
        default=None,
        help="input file, directory or glob (.csv, .tsv, .parquet, .txt); default: stdin",
    )
    _add_output_args(p, stream=True)
    p.add_argument("--column", default="source", help="source text column (default: source)")
    _add_decoding_args(p)
    _add_search_args(p)
    _add_ray_args(p)

    p = sub.add_parser(
        "score",
        help="log-probabilities of given source-target pairs (filtering, reranking)",
        description="Score every source-target pair of a corpus with a checkpoint, one "
        "teacher-forced pass per batch; writes one output row per input row (id, source, "
        "target, score, score_per_token, tokens, status) in input order.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local path or URI)")
    p.add_argument("--input", required=True, help="corpus with source and target columns")
    _add_output_args(p)
    p.add_argument("--source-column", default="source", help="source column (default: source)")
    p.add_argument("--target-column", default="target", help="target column (default: target)")
    p.add_argument(
        "--reverse-checkpoint",
        default=None,
        help="a target->source checkpoint: adds reverse_score(_per_token) and dual_score "
        "(dual conditional cross-entropy, lower is better)",
    )
    _add_decoding_args(p)
    _add_ray_args(p)

    p = sub.add_parser(
        "evaluate",
        help="BLEU and chrF of a checkpoint on a corpus with references",
        description="Translate the source column and score against the target column with "
        "sacrebleu (detokenised output, default 13a tokenisation); prints the signatures.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local path or URI)")
    p.add_argument("--input", required=True, help="corpus with source and reference columns")
    p.add_argument("--column", default="source", help="source column (default: source)")
    p.add_argument(
        "--reference-column", default="target", help="reference column (default: target)"
    )
    p.add_argument(
        "--output", default=None, help="also write the translations here (.csv or .parquet)"
    )
    _add_decoding_args(p)
    _add_ray_args(p)

    p = sub.add_parser(
        "report",
        help="plots and a Markdown summary of a run",
        description="Write PNG plots (loss, perplexity, BLEU/chrF, learning rate, tokens/s, "
        "attention heat maps) and summary.md into RUN_DIR/report/.",
    )
    p.add_argument("run_dir", help="the run directory (storage_path/name)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint for the attention plots (default: the run's best)",
    )
    return parser


def _cmd_train(args) -> dict:
    from job.pipeline import run_train
    from job.runtime import init_ray

    cfg = load_config(args.config, args.overrides)
    init_ray(args.address, args.verbose, args.num_cpus)
    return run_train(cfg, resume=args.resume)


def _bulk(args, task: str, output: str, reference_column: str | None = None) -> dict:
    from job.checkpoint import local_checkpoint, read_checkpoint
    from job.inference.bulk import BulkOptions, bulk_job, default_actors
    from job.inference.outputs import PART_ROWS
    from job.runtime import init_ray

    with local_checkpoint(args.checkpoint, inference=True) as d:
        ckpt_cfg = read_checkpoint(d).cfg
    _check_sampling(args)
    if getattr(args, "alignments", False) and ckpt_cfg.model.attention == "none":
        raise ConfigError("--alignments needs a model with attention (model.attention: luong)")
    init_ray(args.address, args.verbose, args.num_cpus)
    options = BulkOptions(
        task=task,
        column=getattr(args, "source_column", None) or args.column,
        target_column=getattr(args, "target_column", None) or "target",
        id_column=getattr(args, "id_column", None),
        reference_column=reference_column,
        reverse_checkpoint=getattr(args, "reverse_checkpoint", None),
        num_actors=args.actors or default_actors(args.gpu),
        use_gpu=args.gpu,
        batch_size=getattr(args, "batch_size", None) or ckpt_cfg.translate.batch_size,
        batch_tokens=getattr(args, "batch_tokens", None),
        beam=getattr(args, "beam", None),
        length_penalty=getattr(args, "length_penalty", None),
        max_length_ratio=getattr(args, "max_length_ratio", None),
        nbest=getattr(args, "nbest", 1),
        sampling=getattr(args, "sampling", None),
        temperature=getattr(args, "temperature", 1.0),
        seed=getattr(args, "seed", 0),
        alignments=getattr(args, "alignments", False),
        part_rows=getattr(args, "part_rows", None) or PART_ROWS,
        output_format=getattr(args, "format", None),
    )
    return bulk_job(args.checkpoint, args.input, output, options)


def _stream_setup(args):
    """The Translator and decoding options for translating stdin, in this process."""
    from job.inference.stream import check_format
    from job.inference.tasks import decode_options
    from job.inference.translator import Translator

    bulk_only = {"--output": args.output, "--actors": args.actors,
                 "--part-rows": args.part_rows, "--id-column": args.id_column}  # fmt: skip
    for flag in (f for f, value in bulk_only.items() if value is not None):
        raise ConfigError(f"{flag} is for --input files: stdin is translated to stdout")
    _check_sampling(args)
    options = decode_options(args)
    check_format(args.format or "text", options)  # before the checkpoint is fetched and loaded
    device = "cuda" if args.gpu else "cpu"
    return Translator.from_checkpoint(args.checkpoint, device=device), options


def _check_sampling(args) -> None:
    """A bad --sampling spec, or one with n-best or beam search, fails here in one line."""
    from job.model.sampling import Sampling

    if getattr(args, "sampling", None):
        Sampling.parse(args.sampling, args.temperature, args.seed)
        if args.nbest > 1 or (args.beam or 1) > 1:
            raise ConfigError("--sampling draws one translation: drop --nbest / --beam")


RESULT_KEYS = ("output", "rows", "status", "parts", "parts_resumed", "parts_written")


def _cmd_translate(args) -> dict | None:
    if args.input in (None, "-"):
        from job.inference.stream import translate_stream

        translator, options = _stream_setup(args)
        try:
            summary = translate_stream(translator, options, args.format or "text")
        except BrokenPipeError:  # the reader went away (`| head`): stop, as a pipe's end does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            summary = {"stdout_closed": True}
        print(json.dumps(summary), file=sys.stderr)
        return None
    if args.output is None:
        raise ConfigError("translate --input needs --output (or leave out both: stdin to stdout)")
    if args.format in ("text", "jsonl"):
        raise ConfigError(f"--format {args.format} is for stdout: with --output, parquet or csv")
    res = _bulk(args, "translate", args.output)
    return {k: res[k] for k in RESULT_KEYS}


def _cmd_score(args) -> dict:
    res = _bulk(args, "score", args.output)
    return {k: res[k] for k in RESULT_KEYS}


def _cmd_evaluate(args) -> dict:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        output = args.output or os.path.join(tmp, "translations.parquet")
        res = _bulk(args, "translate", output, args.reference_column)
    scores = res["scores"]
    print(scores.pop("bleu_detail"), file=sys.stderr)
    return {
        **scores,
        "rows": res["rows"],
        "status": res["status"],
        **({"output": args.output} if args.output else {}),
    }


def _cmd_report(args) -> dict:
    from job.report import make_report

    return make_report(args.run_dir, args.checkpoint)


COMMANDS = {
    "train": _cmd_train,
    "translate": _cmd_translate,
    "score": _cmd_score,
    "evaluate": _cmd_evaluate,
    "report": _cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except FileNotFoundError as exc:  # a path the user gave that is not there
        print(f"error: {not_found_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        error = user_error_of(exc)
        if error is None:
            raise
        message = " ".join(line.strip() for line in str(error).splitlines())
        print(f"error: {message}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, default=str))
    return 0
