"""Shared helpers for the benchmark scripts: machine description, running the CLI, BENCHMARKS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({cpu}){mem}{gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def run_cli(*args: str, timeout: float = 3600) -> dict:
    """Run `python -m job ...` and stream its stderr/stdout.

    Returns the JSON of its last stdout line.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "job", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    last = ""
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.strip():
            last = line
    if proc.wait(timeout=timeout) != 0:
        raise SystemExit(
            f"`python -m job {' '.join(args)}` failed with exit code {proc.returncode}"
        )
    return json.loads(last)


def append_section(title: str, command: str, body: str) -> None:
    today = datetime.date.today().isoformat()
    text = (
        f"\n## {title} — {today}\n\n"
        f"Machine: {machine()}  \nCommand: `{command}`\n\n{body.strip()}\n"
    )
    if not BENCHMARKS.exists():
        BENCHMARKS.write_text(
            "# Benchmarks\n\nEach section is appended by a script in `bench/`; "
            "numbers are measured, never edited.\n"
        )
    with open(BENCHMARKS, "a") as f:
        f.write(text)
