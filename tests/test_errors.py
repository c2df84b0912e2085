"""Every error a user can cause: one line on stderr naming what to fix, exit code 2 (job.errors,
job.cli). Each kind is raised by the real code path, in process."""

import json

import pytest

from job.cli import main
from job.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ReportError,
    UserError,
    VocabError,
    not_found_message,
    user_error_of,
)


def run_main(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_config_error(capsys):
    assert_one_line(
        *run_main(capsys, "train", "--set", "train.lr=-1"), "train.lr", "greater than 0"
    )


def test_config_file_not_found(capsys):
    assert_one_line(
        *run_main(capsys, "train", "--config", "nope.yaml"), "config file not found: nope.yaml"
    )


def test_checkpoint_error(capsys, tmp_path):
    code, err = run_main(
        capsys,
        "translate",
        "--checkpoint",
        str(tmp_path / "nope"),
        "--input",
        "x.csv",
        "--output",
        str(tmp_path / "o.csv"),
    )
    assert_one_line(code, err, "checkpoint not found", "nope")


def test_vocab_error(capsys, tmp_path):
    for name in ("model.pt", "state.json", "config.yaml"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.json").write_text(json.dumps({"type": "mystery"}))
    code, err = run_main(capsys, "translate", "--checkpoint", str(tmp_path), "--input", "x.csv",
                         "--output", str(tmp_path / "o.csv"))  # fmt: skip
    assert_one_line(code, err, "vocab.json", "mystery")


def test_report_error(capsys, tmp_path):
    assert_one_line(*run_main(capsys, "report", str(tmp_path)), "no metrics.jsonl", str(tmp_path))
    assert_one_line(*run_main(capsys, "report", "s3://bucket/runs/x"), "local run directory")


def test_data_error_from_a_ray_task_is_unwrapped(ray_cluster):
    """A DataError raised inside a Ray task reaches the driver wrapped in a RayTaskError; the
    CLI prints the original message."""

    @ray_cluster.remote
    def fails():
        raise DataError("corpus.csv: column 'source' not found")

    with pytest.raises(Exception) as info:
        ray_cluster.get(fails.remote())
    assert "ray::fails()" in str(info.value) and "File " in str(info.value)  # Ray's own message
    assert str(user_error_of(info.value)) == "corpus.csv: column 'source' not found"


def test_a_missing_file_in_a_ray_task_is_one_line_naming_it(ray_cluster, tmp_path):
    """A FileNotFoundError raised in a task reaches the driver as a RayTaskError that is also a
    FileNotFoundError, whose text is a whole traceback: the message names the path alone."""
    missing = tmp_path / "data" / "train.csv"

    @ray_cluster.remote
    def opens(path):
        open(path).close()

    @ray_cluster.remote
    def raises_bare(path):
        raise FileNotFoundError(path)  # no filename attribute, as some libraries raise it

    for task in (opens, raises_bare):
        with pytest.raises(FileNotFoundError) as info:
            ray_cluster.get(task.remote(str(missing)))
        assert "Traceback" in str(info.value) or "File " in str(info.value)
        assert not_found_message(info.value) == f"not found: {missing}"
    assert not_found_message(FileNotFoundError("x.csv: corpus not found")) == (
        "x.csv: corpus not found"
    )


def test_every_kind_is_a_user_error_and_a_value_error():
    for kind in (ConfigError, DataError, CheckpointError, VocabError, ReportError):
        assert issubclass(kind, UserError) and issubclass(kind, ValueError)
    assert user_error_of(RuntimeError("a bug")) is None
    cause = DataError("x")
    try:
        raise RuntimeError("wrapper") from cause
    except RuntimeError as exc:
        assert user_error_of(exc) is cause


def test_a_bug_keeps_its_traceback(monkeypatch):
    from job import cli

    def broken(args):
        raise ZeroDivisionError("a bug, not the user's doing")

    monkeypatch.setitem(cli.COMMANDS, "report", broken)
    with pytest.raises(ZeroDivisionError):
        main(["report", "somewhere"])


def test_bad_decoding_options_fail_before_ray_starts(capsys, tmp_path):
    from conftest import make_checkpoint

    luong = make_checkpoint(tmp_path / "luong")
    plain = make_checkpoint(
        tmp_path / "plain", "model.attention=none", "model.tie_embeddings=false"
    )
    common = ["--input", "x.csv", "--output", str(tmp_path / "o.csv")]
    code, err = run_main(
        capsys, "translate", "--checkpoint", luong, *common, "--sampling", "topz:3"
    )
    assert_one_line(code, err, "--sampling 'topz:3'", "topk:K")
    code, err = run_main(
        capsys, "translate", "--checkpoint", luong, *common, "--sampling", "topk:5", "--nbest", "3"
    )
    assert_one_line(code, err, "drop --nbest")
    code, err = run_main(capsys, "translate", "--checkpoint", plain, *common, "--alignments")
    assert_one_line(code, err, "--alignments needs a model with attention")
