"""Command line: `python -m job <command>` or `seq2seq <command>`.

    train      read the corpus, build the vocabulary, train with Ray Train (DDP), score the
               test split
    translate  bulk-translate a corpus with a checkpoint (Ray Data)
    evaluate   translate a corpus with references and print BLEU / chrF with sacrebleu's signatures
    report     plots and a Markdown summary of a finished (or running) run

The last line each command prints on stdout is one JSON object (for scripts and CI).
"""

from __future__ import annotations

import argparse
import json
import sys

from job.config import load_config
from job.errors import user_error_of

DEFAULT_CONFIG = "configs/sample.yaml"


def _add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local cluster)",
    )
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and progress bars")


def _add_decoding_args(p: argparse.ArgumentParser) -> None:
    """The translator pool and decoding options that translate and evaluate share."""
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
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override config keys, e.g. --set train.lr=5e-4 scaling.num_workers=1",
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
        "one output row per input row (id, source, translation, score, status) in input order.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local path or URI)")
    p.add_argument(
        "--input", required=True, help="input file, directory or glob (.csv, .tsv, .parquet, .txt)"
    )
    p.add_argument(
        "--output",
        required=True,
        help="output directory of resumable parts (Parquet, or CSV with --format csv), "
        "or one .parquet/.csv file",
    )
    p.add_argument(
        "--format",
        choices=["parquet", "csv"],
        default="parquet",
        help="part format for a directory output (default: parquet)",
    )
    p.add_argument(
        "--part-rows",
        type=int,
        default=None,
        help="rows per output part, the unit of resuming (default: 20000)",
    )
    p.add_argument("--column", default="source", help="source text column (default: source)")
    p.add_argument(
        "--id-column",
        default=None,
        help="column carried through as id (default: 'id' if present, else row numbers)",
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
    init_ray(args.address, args.verbose)
    return run_train(cfg, resume=args.resume)


def _translate(args, reference_column: str | None, output: str) -> dict:
    from job.bulk import BulkOptions, bulk_translate, default_actors
    from job.checkpoint import local_checkpoint, read_checkpoint
    from job.parts import PART_ROWS
    from job.runtime import init_ray

    with local_checkpoint(args.checkpoint) as d:
        ckpt_cfg = read_checkpoint(d).cfg
    init_ray(args.address, args.verbose)
    options = BulkOptions(
        column=args.column,
        id_column=getattr(args, "id_column", None),
        reference_column=reference_column,
        num_actors=args.actors or default_actors(args.gpu),
        use_gpu=args.gpu,
        batch_size=getattr(args, "batch_size", None) or ckpt_cfg.translate.batch_size,
        beam=args.beam,
        part_rows=getattr(args, "part_rows", None) or PART_ROWS,
        output_format=getattr(args, "format", None),
    )
    return bulk_translate(args.checkpoint, args.input, output, options)


def _cmd_translate(args) -> dict:
    res = _translate(args, None, args.output)
    return {
        k: res[k] for k in ("output", "rows", "status", "parts", "parts_resumed", "parts_written")
    }


def _cmd_evaluate(args) -> dict:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = _translate(
            args, args.reference_column, args.output or os.path.join(tmp, "translations.parquet")
        )
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
    "evaluate": _cmd_evaluate,
    "report": _cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except FileNotFoundError as exc:  # a path the user gave that is not there
        print(f"error: not found: {exc.filename or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        error = user_error_of(exc)
        if error is None:
            raise
        message = " ".join(line.strip() for line in str(error).splitlines())
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(result, default=str))
    return 0
