"""`translate` from stdin to stdout (job.inference.stream): the real command in a subprocess
where Ray cannot even be imported, answers that come before stdin ends, line i for line i."""

import io
import json
import os
import subprocess
import sys
import threading

import pytest

from job.cli import main
from job.inference.stream import translate_stream
from job.inference.translator import DecodeOptions, Translator
from job.model.sampling import Sampling

from conftest import ROOT, SRC, make_checkpoint

# The command, run where `import ray` fails: translating stdin must not need a Ray cluster.
NO_RAY = "import sys; sys.modules['ray'] = None; from job.cli import main; sys.exit(main())"


def command(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", NO_RAY, "translate", *args],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("stream") / "ckpt")


def test_stdin_to_stdout_line_for_line_as_the_translator_without_ray(checkpoint):
    lines = [SRC[0].encode(), b"", SRC[1].encode(), b"bad \xff byte", SRC[2].encode() + b"\r"]
    proc = command("--checkpoint", checkpoint, "--beam", "2")
    out, err = proc.communicate(b"\n".join(lines) + b"\n", timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    got = out.decode().split("\n")
    assert got[-1] == "" and len(got) - 1 == len(lines)  # one line out per line in
    expected = Translator.from_checkpoint(checkpoint).translate(SRC[:3], beam=2)
    assert [got[0], got[2], got[4]] == [t.text for t in expected]
    assert got[1] == got[3] == ""  # an empty line and one that is not UTF-8: empty answers
    summary = json.loads(err.decode().strip().splitlines()[-1])
    assert summary["lines"] == 5 and summary["ok"] == 3
    assert summary["status"] == {"ok": 3, "empty_source": 1, "invalid_utf8": 1}


def test_each_answer_comes_before_stdin_ends(checkpoint):
    proc = command("--checkpoint", checkpoint, "--beam", "1")
    answers = []
    try:
        for sentence in SRC[:2]:
            proc.stdin.write(sentence.encode() + b"\n")
            proc.stdin.flush()
            reader = threading.Thread(target=lambda: answers.append(proc.stdout.readline()))
            reader.start()
            reader.join(timeout=60)
            assert not reader.is_alive(), "no answer while stdin stayed open"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    expected = Translator.from_checkpoint(checkpoint).translate(SRC[:2], beam=1)
    assert [a.decode().rstrip("\n") for a in answers] == [t.text for t in expected]


def test_nbest_and_alignments_as_json_lines(checkpoint):
    proc = command("--checkpoint", checkpoint, "--beam", "3", "--nbest", "2", "--alignments",
                   "--format", "jsonl")  # fmt: skip
    out, err = proc.communicate("\n".join(SRC[:3]).encode() + b"\n", timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert all(
        len(r["nbest"]) == 2 and r["nbest"][0]["translation"] == r["translation"] for r in rows
    )
    assert all(r["alignment"] and all(isinstance(j, int) for j in r["alignment"]) for r in rows)


def test_a_sample_depends_on_the_line_not_on_the_batches(checkpoint):
    translator = Translator.from_checkpoint(checkpoint)
    options = DecodeOptions(sampling=Sampling.parse("topk:5", 1.0, 7))
    text = "\n".join(SRC[:8]).encode() + b"\n"
    outputs = []
    for max_lines in (1, 3, 64):
        out = io.StringIO()
        translate_stream(translator, options, "text", io.BytesIO(text), out, max_lines=max_lines)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].count("\n") == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "x.csv"], "translate --input needs --output"),
        (["--output", "out.csv"], "--output is for --input files"),
        (["--actors", "2"], "--actors is for --input files"),
        (["--nbest", "2", "--beam", "2"], "need --format jsonl"),
        (["--format", "parquet"], "use --format text or jsonl"),
        (
            ["--input", "x.csv", "--output", "o", "--format", "jsonl"],
            "--format jsonl is for stdout",
        ),
    ],
)
def test_options_that_do_not_fit_are_one_line_errors(checkpoint, args, message, capsys):
    assert main(["translate", "--checkpoint", checkpoint, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
