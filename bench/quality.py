"""Translation quality for a fixed training budget on the bundled corpus.

Trains configs/sample.yaml for `--minutes` of training (default 15), then scores the best
checkpoint (by validation BLEU) on the test split with greedy search and with beam 5.
Appends the result to BENCHMARKS.md; the last line printed is one JSON object.

    .venv/bin/python bench/quality.py [--minutes 15] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import ROOT, append_section, run_cli


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--minutes", type=float, default=15.0, help="training budget (train.max_minutes)"
    )
    ap.add_argument("--config", default="configs/sample.yaml")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra config overrides")
    ap.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args()

    name = f"quality-{time.strftime('%Y%m%d-%H%M%S')}"
    overrides = [
        f"name={name}",
        f"train.max_minutes={args.minutes}",
        "translate.beam_size=5",
        *args.overrides,
    ]
    started = time.perf_counter()
    train = run_cli("train", "--config", args.config, "--set", *overrides)
    wall = time.perf_counter() - started
    test = str(ROOT / "data" / "sample" / "test.csv")
    greedy = run_cli(
        "evaluate", "--checkpoint", train["best_checkpoint"], "--input", test, "--beam", "1"
    )
    result = {
        "test_bleu_greedy": greedy["bleu"],
        "test_chrf_greedy": greedy["chrf"],
        "test_bleu_beam5": train["test_bleu"],
        "test_chrf_beam5": train["test_chrf"],
        "best_valid_bleu": train["best_valid_bleu"],
        "best_checkpoint": train["best_checkpoint"],
        "train_minutes": args.minutes,
        "train_command_wall_s": round(wall, 1),
        "bleu_signature": greedy["bleu_signature"],
        "chrf_signature": greedy["chrf_signature"],
    }
    if not args.no_record:
        command = f"python bench/quality.py --minutes {args.minutes}" + (
            f" --set {' '.join(args.overrides)}" if args.overrides else ""
        )
        append_section(
            "Quality: test BLEU/chrF after a fixed training budget",
            command,
            f"""
| {args.minutes:g} min of training, {args.config} | greedy | beam 5 |
|---|---|---|
| test BLEU | {result["test_bleu_greedy"]} | {result["test_bleu_beam5"]} |
| test chrF | {result["test_chrf_greedy"]} | {result["test_chrf_beam5"]} |

Best validation BLEU (greedy) {result["best_valid_bleu"]}; """
            f"""`train` command wall time {result["train_command_wall_s"]} s
(start-up, data preparation, training, validation, test translation). sacreBLEU signatures:
`{result["bleu_signature"]}`, `{result["chrf_signature"]}`.
""",
        )
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
