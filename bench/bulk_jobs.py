"""Scoring and sampling against translation, side by side in one run, on the bundled test split.

In one process, all cores, the same checkpoint and rows (the test split, `--repeat` times):
(a) greedy translation, `Translator.translate(beam=1)`;
(b) `Translator.score(sources, references)`: one teacher-forced pass per batch;
(c) the per-pair loop a user would write: `Translator.score([s], [t])` once per pair, on the
    first `--loop-rows` rows;
(d) top-k sampling (`topk:10`) and nucleus sampling (`topp:0.9`), `Translator.translate`;
then through the Ray Data bulk path (2 actors, embedded cluster), `bulk_score` against greedy
`bulk_translate` on the same input, wall time of each whole job (start-up included in both).
Targets (issue): score >= 3x greedy translate's sentences/s and >= 10x the per-pair loop;
sampling <= 1.2x greedy's time. Each timing is the best of `--rounds` passes.

Without `--checkpoint` the best checkpoint of the newest run under runs/ is used. Appends to
BENCHMARKS.md (unless --no-record); the last line printed is one JSON object.

    .venv/bin/python bench/bulk_jobs.py [--checkpoint DIR] [--repeat 2] [--loop-rows 300]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time

from translate_throughput import latest_checkpoint

from common import ROOT, append_section

sys.path.insert(0, str(ROOT))
TEST = ROOT / "data" / "sample" / "test.csv"


def best_of(rounds: int, fn) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--loop-rows", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    from job.inference.translator import DecodeOptions, Translator
    from job.model.sampling import Sampling

    checkpoint = args.checkpoint or latest_checkpoint()
    with open(TEST, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    sources = [r["source"] for r in rows] * args.repeat
    targets = [r["target"] for r in rows] * args.repeat
    n = len(sources)
    t = Translator.from_checkpoint(checkpoint, device="cpu")
    r = args.rounds

    def sampled(method: str, value: float) -> DecodeOptions:
        return DecodeOptions(sampling=Sampling(method, value))

    secs = {
        "greedy": best_of(r, lambda: t.translate(sources, beam=1)),
        "score": best_of(r, lambda: t.score(sources, targets)),
        "topk": best_of(
            r, lambda: t.translate(sources, options=DecodeOptions(sampling=Sampling("topk", 10)))
        ),
        "topp": best_of(
            r, lambda: t.translate(sources, options=DecodeOptions(sampling=Sampling("topp", 0.9)))
        ),
    }
    loop_n = min(args.loop_rows, n)
    pairs = list(zip(sources[:loop_n], targets[:loop_n]))
    loop_s = best_of(r, lambda: [t.score([s], [g]) for s, g in pairs])
    rate = {k: n / v for k, v in secs.items()}
    rate["score_loop"] = loop_n / loop_s

    # the bulk path: whole jobs, start-up included in both
    from job.inference.bulk import bulk_score, bulk_translate
    from job.runtime import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["source", "target"])
            w.writerows(zip(sources, targets))
        kw = {"num_actors": 2, "progress": False}
        start = time.perf_counter()
        bulk_translate(checkpoint, path, os.path.join(tmp, "t.parquet"), beam=1, **kw)
        bulk_greedy = time.perf_counter() - start
        start = time.perf_counter()
        bulk_score(checkpoint, path, os.path.join(tmp, "s.parquet"), **kw)
        bulk_scored = time.perf_counter() - start

    result = {
        "rows": n,
        "sentences_per_s": {k: round(v, 1) for k, v in rate.items()},
        "score_vs_greedy": round(rate["score"] / rate["greedy"], 2),
        "score_vs_loop": round(rate["score"] / rate["score_loop"], 2),
        "topk_time_vs_greedy": round(secs["topk"] / secs["greedy"], 3),
        "topp_time_vs_greedy": round(secs["topp"] / secs["greedy"], 3),
        "bulk_wall_s": {"greedy_translate": round(bulk_greedy, 1), "score": round(bulk_scored, 1)},
        "bulk_score_vs_greedy": round(bulk_greedy / bulk_scored, 2),
        "checkpoint": checkpoint,
    }
    rows_md = [
        ("(a) greedy translate", f"{rate['greedy']:,.0f}", "1.00", ""),
        ("(b) score (teacher-forced)", f"{rate['score']:,.0f}",
         f"{result['score_vs_greedy']:.2f}x (a)", ">= 3x"),
        (f"(c) per-pair score loop ({loop_n} rows)", f"{rate['score_loop']:,.0f}",
         f"(b) = {result['score_vs_loop']:.1f}x (c)", ">= 10x"),
        ("(d) sampling topk:10", f"{rate['topk']:,.0f}",
         f"time {result['topk_time_vs_greedy']:.2f}x (a)", "<= 1.2x"),
        ("(d) sampling topp:0.9", f"{rate['topp']:,.0f}",
         f"time {result['topp_time_vs_greedy']:.2f}x (a)", "<= 1.2x"),
        ("bulk, 2 actors, whole job: greedy translate / score",
         f"{bulk_greedy:.1f} s / {bulk_scored:.1f} s",
         f"{result['bulk_score_vs_greedy']:.2f}x", ""),
    ]  # fmt: skip
    table = "\n".join(
        ["| job | sentences/s | ratio | target |", "|---|---|---|---|"]
        + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows_md]
    )
    print(table)
    if not args.no_record:
        body = (
            f"{n} rows (the test split x{args.repeat}), checkpoint "
            f"`{os.path.relpath(checkpoint, ROOT)}`, best of {r} passes, one process on all cores "
            f"unless marked bulk.\n\n{table}\n\n```json\n{json.dumps(result)}\n```"
        )
        append_section(
            "Bulk jobs: score and sampling vs translation", "python bench/bulk_jobs.py", body
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
