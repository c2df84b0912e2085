"""Bulk translation throughput and memory on the bundled corpus, side by side in one run.

(a) the naive loop a user would write: `Translator.translate([sentence])` once per sentence,
    same checkpoint, same beam, torch's default threads (all cores);
(b) this pipeline (`bulk_translate`: Ray Data read -> actor pool -> parts) with 1 and 2 actors,
    on the test split repeated `--repeat` times; steady state = (N - 10) rows / (wall time of
    the N-row run - wall time of a 10-row run), so start-up (actors, checkpoint load) cancels
    out; the wall-time rate includes it;
(c) peak memory (sum of RSS over this process and its descendants: the embedded Ray cluster's
    raylet, workers and actors; sampled every 0.2 s) while translating the test split 1x and
    10x, greedy. Flat memory means the 10x peak is about the 1x peak.
`--million` instead translates a 1,000,000-row input (the test split repeated, fresh ids
0..N-1) greedy with 2 actors and checks the output has exactly those rows and ids in order.

Without `--checkpoint` the best checkpoint of the newest run under runs/ with a summary.json
is used. Appends to BENCHMARKS.md; the last line printed is one JSON object.

    .venv/bin/python bench/translate_throughput.py [--checkpoint DIR] [--repeat 5]
        [--naive-rows 200]
    .venv/bin/python bench/translate_throughput.py --million
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import pyarrow as pa
import pyarrow.dataset as pads

from common import ROOT, append_section

sys.path.insert(0, str(ROOT))
TEST = ROOT / "data" / "sample" / "test.csv"


def latest_checkpoint() -> str:
    summaries = sorted(glob.glob(str(ROOT / "runs" / "*" / "summary.json")), key=os.path.getmtime)
    for path in reversed(summaries):
        with open(path, encoding="utf-8") as f:
            best = json.load(f).get("best_checkpoint")
        if best and os.path.isdir(best):
            return best
    raise SystemExit(
        "no trained checkpoint under runs/: run `make run` (or bench/quality.py) first, "
        "or pass --checkpoint"
    )


def repeated_input(sources: list[str], times: int, path: str) -> int:
    """The test split's sources `times` over, with fresh ids 0..N-1; returns N."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "source"])
        n = 0
        for _ in range(times):
            for s in sources:
                w.writerow([n, s])
                n += 1
    return n


class PeakRSS(threading.Thread):
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop_event = 0, threading.Event()

    def sample(self) -> int:
        """Summed RSS (bytes) of this process and its descendants, from /proc."""
        parent, rss = {}, {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parent[int(pid)], rss[int(pid)] = (
                    int(fields[1]),
                    int(fields[21]) * os.sysconf("SC_PAGE_SIZE"),
                )
            except (OSError, ValueError, IndexError):
                continue
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            kids = [p for p, pp in parent.items() if pp in frontier and p not in tree]
            tree.update(kids)
            frontier = kids
        return sum(rss.get(p, 0) for p in tree)

    def run(self) -> None:
        while not self.stop_event.wait(0.2):
            self.peak = max(self.peak, self.sample())

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.join()


def naive(checkpoint: str, sources: list[str], beam: int) -> float:
    from job.inference.translator import Translator

    t = Translator.from_checkpoint(checkpoint)
    t.translate(sources[:2], beam=beam)  # warm-up
    started = time.perf_counter()
    for s in sources:
        t.translate([s], beam=beam)
    return len(sources) / (time.perf_counter() - started)


BATCH = 64  # sentences per decoding batch (--batch-size)


def pipeline(checkpoint: str, path: str, out: str, actors: int, beam: int) -> dict:
    from job.inference.bulk import bulk_translate

    shutil.rmtree(out, ignore_errors=True)
    return bulk_translate(
        checkpoint, path, out, num_actors=actors, beam=beam, batch_size=BATCH, progress=False
    )


def million(checkpoint: str, tmp: str, sources: list[str]) -> dict:
    path = os.path.join(tmp, "million.csv")
    n = repeated_input(sources, -(-1_000_000 // len(sources)), path)
    # Exactly 1,000,000 rows: cut the last repetition short.
    with open(path, encoding="utf-8") as f, open(path + ".cut", "w", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i > 1_000_000:
                break
            g.write(line)
    os.replace(path + ".cut", path)
    n = 1_000_000
    out = os.path.join(tmp, "million-out")
    with PeakRSS() as mem:
        samples = []
        sampler_stop = threading.Event()

        def every_30s():
            while not sampler_stop.wait(30):
                samples.append(round(mem.sample() / 2**20))

        sampler = threading.Thread(target=every_30s, daemon=True)
        sampler.start()
        res = pipeline(checkpoint, path, out, actors=2, beam=1)
        sampler_stop.set()
    ids = pads.dataset(out, format="parquet").to_table(columns=["id"]).column("id")
    ids_ok = (
        ids.to_pylist() == [str(i) for i in range(n)]
        if ids.type == pa.string()
        else ids.to_pylist() == list(range(n))
    )
    return {
        "rows_in": n,
        "rows_out": len(ids),
        "ids_in_order": ids_ok,
        "status": res["status"],
        "parts": res["parts"],
        "wall_s": res["wall_s"],
        "rows_per_s": round(n / res["wall_s"], 1),
        "peak_rss_mib": round(mem.peak / 2**20),
        "rss_every_30s_mib": samples,
    }


def main() -> None:
    global BATCH
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument(
        "--repeat", type=int, default=5, help="test-split repetitions for the pipeline runs"
    )
    ap.add_argument(
        "--naive-rows", type=int, default=200, help="sentences the naive loop translates"
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=BATCH,
        help="sentences per decoding batch (default 64: best on 2 CPU cores)",
    )
    ap.add_argument("--million", action="store_true", help="the 1,000,000-row run instead")
    ap.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args()
    BATCH = args.batch_size
    checkpoint = args.checkpoint or latest_checkpoint()
    with open(TEST, encoding="utf-8", newline="") as f:
        sources = [r["source"] for r in csv.DictReader(f)]

    from job.runtime import init_ray

    tmp = tempfile.mkdtemp(prefix="bench-translate-")
    try:
        init_ray()
        if args.million:
            result = million(checkpoint, tmp, sources)
            if not args.no_record:
                append_section(
                    "Bulk translation: 1,000,000 rows, flat memory",
                    "python bench/translate_throughput.py --million",
                    (
                        "\nInput: the test split repeated to exactly 1,000,000 rows "
                        "with fresh ids; greedy, 2 actors, Parquet parts of 20,000 rows.\n"
                        f"Checkpoint: `{os.path.relpath(checkpoint, ROOT)}`.\n"
                        "\n"
                        "| rows in | rows out | ids intact, in order | wall | rows/s (whole call) "
                        "| peak RSS (driver + Ray) |\n"
                        "|---|---|---|---|---|---|\n"
                        f"| {result['rows_in']:,} | {result['rows_out']:,} "
                        f"| {result['ids_in_order']} | {result['wall_s']:.0f} s "
                        f"| {result['rows_per_s']:.0f} rows/s | {result['peak_rss_mib']:,} MiB |\n"
                        "\n"
                        f"RSS every 30 s (MiB): {result['rss_every_30s_mib']}. "
                        f"Status counts: {result['status']}.\n"
                    ),
                )
            print(json.dumps(result))
            return

        one = os.path.join(tmp, "x1.csv")
        repeated_input(sources, 1, one)
        tiny = os.path.join(tmp, "tiny.csv")
        repeated_input(sources[:10], 1, tiny)
        many = os.path.join(tmp, f"x{args.repeat}.csv")
        rows = repeated_input(sources, args.repeat, many)
        result: dict = {
            "checkpoint": checkpoint,
            "pipeline_rows": rows,
            "naive_rows": args.naive_rows,
        }
        table = []
        for beam in (1, 5):
            nv = naive(checkpoint, sources[: args.naive_rows], beam)
            runs = {}
            for a in (1, 2):
                # Steady state = the extra rows over the extra time against a 10-row run with the
                # same set-up: start-up (actors, checkpoint load, Ray Data planning) cancels out.
                small = pipeline(checkpoint, tiny, os.path.join(tmp, f"tiny-{beam}-{a}"), a, beam)
                run = pipeline(checkpoint, many, os.path.join(tmp, f"out-{beam}-{a}"), a, beam)
                run["steady_rows_per_s"] = round(
                    (rows - 10) / max(run["wall_s"] - small["wall_s"], 1e-9), 1
                )
                run["startup_s"] = small["wall_s"]
                runs[a] = run
            best = max(runs.values(), key=lambda r: r["steady_rows_per_s"])
            key = "greedy" if beam == 1 else f"beam{beam}"
            result[key] = {
                "naive_sentences_per_s": round(nv, 1),
                **{f"pipeline_{a}_actor_steady": r["steady_rows_per_s"] for a, r in runs.items()},
                **{
                    f"pipeline_{a}_actor_wall": round(rows / r["wall_s"], 1)
                    for a, r in runs.items()
                },
                "speedup": round(best["steady_rows_per_s"] / nv, 2),
            }
            table.append((key, nv, runs))
            print(json.dumps({key: result[key]}), flush=True)
        with PeakRSS() as m1:
            pipeline(checkpoint, one, os.path.join(tmp, "mem-1"), 2, 1)
        ten = os.path.join(tmp, "x10.csv")
        repeated_input(sources, 10, ten)
        with PeakRSS() as m10:
            pipeline(checkpoint, ten, os.path.join(tmp, "mem-10"), 2, 1)
        result["peak_rss_mib_1x"], result["peak_rss_mib_10x"] = (
            round(m1.peak / 2**20),
            round(m10.peak / 2**20),
        )
        result["rss_ratio_10x_vs_1x"] = round(m10.peak / max(m1.peak, 1), 3)
        # The headline numbers the issue asks for: beam 5.
        result.update(
            naive_sentences_per_s=result["beam5"]["naive_sentences_per_s"],
            pipeline_sentences_per_s=max(
                result["beam5"]["pipeline_1_actor_steady"],
                result["beam5"]["pipeline_2_actor_steady"],
            ),
            speedup=result["beam5"]["speedup"],
            beam=5,
        )
        if not args.no_record:
            lines = "\n".join(
                f"| {key} | {nv:.1f} "
                f"| {runs[1]['steady_rows_per_s']:.0f} ({rows / runs[1]['wall_s']:.0f}) | "
                f"{runs[2]['steady_rows_per_s']:.0f} ({rows / runs[2]['wall_s']:.0f}) | "
                f"{max(runs[1]['steady_rows_per_s'], runs[2]['steady_rows_per_s']) / nv:.1f}x |"
                for key, nv, runs in table
            )
            append_section(
                "Bulk translation throughput and memory",
                f"python bench/translate_throughput.py --repeat {args.repeat}",
                (
                    f"\nCheckpoint: `{os.path.relpath(checkpoint, ROOT)}` "
                    "(configs/sample.yaml model). Naive loop: `Translator.translate([s])`\n"
                    f"per sentence over the first {args.naive_rows} test sentences, "
                    "torch's default threads. Pipeline: `bulk_translate` over the\n"
                    f"test split x{args.repeat} ({rows:,} rows), batch {BATCH}; "
                    "sentences/s in steady state ((N - 10) / (wall(N rows) - wall(10 rows)):\n"
                    "start-up cancels out), "
                    "and in brackets over the whole call including start-up.\n"
                    "\n"
                    "| search | naive loop (sent/s) | pipeline, 1 actor | pipeline, 2 actors "
                    "| speed-up (best steady / naive) |\n"
                    "|---|---|---|---|---|\n"
                    f"{lines}\n"
                    "\n"
                    "Peak RSS of driver + Ray processes, greedy, 2 actors: "
                    f"test split x1 {result['peak_rss_mib_1x']:,} MiB, x10\n"
                    f"{result['peak_rss_mib_10x']:,} MiB (ratio {result['rss_ratio_10x_vs_1x']}).\n"
                ),
            )
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
