"""Corpus-scale preparation: synthetic corpora of 0.25M, 1M and 4M pairs made from the bundled one
(each row made unique by a row number on both sides), one CSV file each (the hardest layout: one
file, no natural split), trained with `python -m job train` just long enough for a first step.

Per size it records, from the job's own `[data] ... in Xs` lines and the run's metrics.jsonl:
    read and classify, vocabulary, encode and write the prepared data (seconds, rows/s),
    the whole preparation, the time from the command's start to the first training step,
    the driver's peak RSS (the `python -m job` process, sampled every 0.2 s),
    the object store's peak (bytes used in /dev/shm, where Ray's local object store lives),
and a `--resume` of the run: its time to the first training step (the prepared data reused).

It also runs, in the same invocation, the 1M corpus on an embedded cluster of one CPU
(`--num-cpus 1`), for the parallel speed-up, and the code as it was before the
corpus-scale work (`--baseline REF`, a git ref run from a worktree) at 0.25M and 1M, for the
throughput ratio. Results are appended to BENCHMARKS.md.

    .venv/bin/python bench/scale.py [--sizes 250000,1000000,4000000] [--baseline f50aec0]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, append_section

STAGES = {
    "read": r"\[data\] read and classified (\d+) rows in ([\d.]+)s",
    "vocab": r"\[data\] built .* vocabulary from (\d+) sampled pairs.* in ([\d.]+)s",
    "encode": r"\[data\] encoded and wrote the prepared data in ([\d.]+)s",
    "prepared": r"\[data\] prepared in ([\d.]+)s",
}


def make_corpus(n: int, path: Path) -> None:
    """Row i: the bundled pair i mod 45,686 with the number i mod 1,000,000 appended to both
    sides. Rows stay unique far beyond 4M (the two moduli only meet again at their least common
    multiple, 2.3e10), and the text's make-up is the same at every size from 1M on: with i itself
    appended, the 4M corpus carries 7-digit numbers the 1M one does not, and SentencePiece, on
    a sample of the same size, takes 1.5x as long on them (BENCHMARKS.md, notes)."""
    with open(ROOT / "data/sample/train.csv", encoding="utf-8", newline="") as f:
        rows = [(r["source"], r["target"]) for r in csv.DictReader(f)]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "target"])
        for i in range(n):
            s, t = rows[i % len(rows)]
            k = i % 1_000_000
            w.writerow([f"{s} {k}", f"{t} {k}"])


class Peaks(threading.Thread):
    """Peak RSS of one process and peak bytes used in /dev/shm, sampled until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.rss, self.shm, self.done = pid, 0, 0, threading.Event()
        st = os.statvfs("/dev/shm")
        self.shm_base = (st.f_blocks - st.f_bfree) * st.f_frsize

    def run(self) -> None:
        while not self.done.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    kb = int(next(x for x in f if x.startswith("VmRSS")).split()[1])
                self.rss = max(self.rss, kb * 1024)
            except (OSError, StopIteration):
                pass
            st = os.statvfs("/dev/shm")
            self.shm = max(self.shm, (st.f_blocks - st.f_bfree) * st.f_frsize - self.shm_base)
            time.sleep(0.2)


def first_step_seconds(metrics: Path, after_rows: int, started: float, proc) -> float | None:
    """Seconds from `started` until metrics.jsonl has a new training row (log_every_steps=1)."""
    while proc.poll() is None:
        try:
            rows = [json.loads(x) for x in metrics.read_text().splitlines()[after_rows:]]
        except (OSError, ValueError):
            rows = []
        if any("train_loss" in r for r in rows):
            return time.perf_counter() - started
        time.sleep(0.2)
    return None


def train(cwd: Path, args: list[str], metrics: Path | None, env: dict) -> dict:
    """Run `python -m job train ...` in cwd; its stage times, peaks and first-step time."""
    before = len(metrics.read_text().splitlines()) if metrics and metrics.exists() else 0
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "job", "train", *args],
        cwd=cwd, env={**env, "PYTHONPATH": str(cwd)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    peaks = Peaks(proc.pid)
    peaks.start()
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    first = first_step_seconds(metrics, before, started, proc) if metrics else None
    try:
        proc.wait(timeout=3600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        raise
    reader.join()
    peaks.done.set()
    text = "".join(out)
    if proc.returncode:
        raise SystemExit(f"train {' '.join(args)} failed:\n{text[-3000:]}")
    result = {"rss_mb": peaks.rss / 2**20, "shm_mb": peaks.shm / 2**20, "first_step_s": first}
    for stage, pattern in STAGES.items():
        m = re.search(pattern, text)
        if m:
            result[f"{stage}_s"] = float(m.groups()[-1])
    return result


def overrides(corpus: Path, runs: Path, name: str, minutes: float) -> list[str]:
    return [
        "--set", f"data.train={corpus}", "data.test=null", f"name={name}",
        f"storage_path={runs}", f"train.max_minutes={minutes}", "train.log_every_steps=1",
        "scaling.num_workers=1", "train.average_last=0",
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="250000,1000000,4000000")
    ap.add_argument("--baseline", default="f50aec0", help="git ref of the code to compare with")
    ap.add_argument("--baseline-sizes", default="1000000,4000000")
    ap.add_argument("--minutes", type=float, default=0.1, help="train.max_minutes of each run")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    sizes = [int(x) for x in args.sizes.split(",")]
    results: dict[str, dict] = {}
    for n in sizes:
        corpus = work / f"pairs-{n}.csv"
        if not corpus.exists():
            make_corpus(n, corpus)
        runs = work / "runs"
        metrics = runs / f"scale-{n}" / "metrics.jsonl"
        shutil.rmtree(runs / f"scale-{n}", ignore_errors=True)
        r = train(ROOT, overrides(corpus, runs, f"scale-{n}", args.minutes), metrics, env)
        resumed = train(
            ROOT, [*overrides(corpus, runs, f"scale-{n}", args.minutes * 3), "--resume"],
            metrics, env,
        )  # fmt: skip
        r["resume_first_step_s"] = resumed["first_step_s"]
        r["resume_rss_mb"] = resumed["rss_mb"]
        results[f"new {n}"] = r
        print(n, json.dumps(r), flush=True)

    one_m = work / "pairs-1000000.csv"
    if 1_000_000 in sizes:  # the same corpus on an embedded cluster of one CPU
        shutil.rmtree(work / "runs" / "cpu1", ignore_errors=True)
        sets = [*overrides(one_m, work / "runs", "cpu1", args.minutes), "--num-cpus", "1"]
        results["new 1000000 on 1 CPU"] = r = train(ROOT, sets, None, env)
        print("1 cpu", json.dumps(r), flush=True)

    if args.baseline:
        base = work / "baseline"
        if not base.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline],
                           cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            for n in (int(x) for x in args.baseline_sizes.split(",")):
                corpus = work / f"pairs-{n}.csv"
                if not corpus.exists():
                    make_corpus(n, corpus)
                name = f"base-{n}"
                shutil.rmtree(work / "runs" / name, ignore_errors=True)
                # the old CLI keeps only the last --set: pass one --set with every pair
                sets = overrides(corpus, work / "runs", name, args.minutes)
                r = train(base, sets, work / "runs" / name / "metrics.jsonl", env)
                results[f"before {n}"] = r
                print("baseline", n, json.dumps(r), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           capture_output=True)  # fmt: skip
    report(results, sizes, args)


def report(results: dict, sizes: list[int], args) -> None:
    def cell(v, fmt="{:.1f}"):
        return "—" if v is None else fmt.format(v)

    lines = [
        "| run | read+classify s | vocab s | encode+write s | prepared s | rows/s | "
        "first step s | driver peak RSS MB | object store peak MB | resume: first step s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        n = int(name.split()[1])
        rate = n / r["prepared_s"] if r.get("prepared_s") else None
        lines.append(
            f"| {name} | {cell(r.get('read_s'))} | {cell(r.get('vocab_s'))} | "
            f"{cell(r.get('encode_s'))} | {cell(r.get('prepared_s'))} | {cell(rate, '{:,.0f}')} | "
            f"{cell(r.get('first_step_s'))} | {cell(r['rss_mb'], '{:,.0f}')} | "
            f"{cell(r['shm_mb'], '{:,.0f}')} | {cell(r.get('resume_first_step_s'))} |"
        )
    ratios = []

    def ratio(label, a, b, key="prepared_s", target=""):
        if a in results and b in results and results[a].get(key) and results[b].get(key):
            ratios.append(f"- {label}: **{results[a][key] / results[b][key]:.2f}x** {target}")

    ratio("4M preparation / 1M preparation", "new 4000000", "new 1000000", target="(target ≤ 4.4)")
    ratio("4M vocabulary / 1M vocabulary", "new 4000000", "new 1000000", "vocab_s", "(≤ 1.2)")
    ratio("1M on 1 CPU / 1M on 2 CPUs (speed-up)", "new 1000000 on 1 CPU", "new 1000000",
          target="(≥ 1.7)")  # fmt: skip
    for n in (1000000, 4000000):
        ratio(f"before / now at {n:,} (preparation time)", f"before {n}", f"new {n}")

    def margin(kind):
        a, b = results.get(f"{kind} 1000000"), results.get(f"{kind} 4000000")
        if a and b and a.get("prepared_s") and b.get("prepared_s"):
            return 3_000_000 / (b["prepared_s"] - a["prepared_s"])
        return None

    if margin("new") and margin("before"):
        ratios.append(
            f"- rows/s at the margin, 1M -> 4M: now {margin('new'):,.0f}, before "
            f"{margin('before'):,.0f}: **{margin('new') / margin('before'):.2f}x** (≥ 3)"
        )
    ratio("4M driver RSS / 1M", "new 4000000", "new 1000000", "rss_mb", "(≤ 1.2)")
    if "new 4000000" in results:
        r = results["new 4000000"]
        if r.get("resume_first_step_s") and r.get("prepared_s"):
            share = r["resume_first_step_s"] / r["prepared_s"]
            label = "4M `--resume` to first step / 4M preparation"
            ratios.append(f"- {label}: **{share:.1%}** (≤ 10%)")
    body = "\n".join(lines) + "\n\n" + "\n".join(ratios)
    command = f"python bench/scale.py --sizes {args.sizes} --baseline {args.baseline}"
    append_section("Corpus-scale preparation (bench/scale.py)", command, body)
    print(body)


if __name__ == "__main__":
    main()
