"""The prepared data's manifest (job.corpus.manifest): what changed since it was written is
named."""

import os

import pytest

from job.config import load_config
from job.corpus.manifest import (
    VERSION,
    changes,
    read_manifest,
    what_it_was_made_from,
    write_manifest,
)
from job.errors import ConfigError


def config(tmp_path, **extra):
    sets = {"data.train": str(tmp_path / "t.csv"), "data.valid": "null", **extra}
    return load_config(None, [f"{k}={v}" for k, v in sets.items()])


def manifest_for(cfg):
    return {"version": VERSION, **what_it_was_made_from(cfg)}


def test_unchanged_inputs_match(tmp_path):
    (tmp_path / "t.csv").write_text("source,target\na,b\n")
    cfg = config(tmp_path)
    assert changes(manifest_for(cfg), cfg) == []


def test_each_kind_of_change_is_named(tmp_path):
    (tmp_path / "t.csv").write_text("source,target\na,b\n")
    cfg = config(tmp_path)
    old = manifest_for(cfg)
    (tmp_path / "t.csv").write_text("source,target\na,b\nc,d\n")
    os.utime(tmp_path / "t.csv", (1, 1))
    assert changes(old, cfg) == [
        f"{tmp_path / 't.csv'}: changed (size 18 -> 22, modified "
        f"{old['inputs']['train']['files'][0]['mtime']} -> 1970-01-01T00:00:01+00:00)"
    ]
    other = config(tmp_path, **{"data.max_length": 64, "vocab.vocab_size": 500})
    assert changes(manifest_for(cfg), other) == [
        "data.max_length: 128 -> 64",
        "vocab.vocab_size: 8000 -> 500",
    ]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("source,target\na,b\n")
    in_dir = config(tmp_path, **{"data.train": str(tmp_path / "d")})
    before = manifest_for(in_dir)
    (tmp_path / "d" / "b.csv").write_text("source,target\na,b\n")
    assert changes(before, in_dir) == [f"{tmp_path / 'd' / 'b.csv'}: a new file"]
    (tmp_path / "d" / "a.csv").unlink()
    assert f"{tmp_path / 'd' / 'a.csv'}: gone" in changes(before, in_dir)
    assert changes({"version": 0}, cfg) == [f"manifest version 0 (this job reads {VERSION})"]


def test_manifest_round_trip_and_a_broken_one(tmp_path):
    assert read_manifest(str(tmp_path)) is None
    write_manifest(str(tmp_path), {"version": VERSION})
    assert read_manifest(str(tmp_path)) == {"version": VERSION}
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"manifest\.json: not a manifest this job wrote"):
        read_manifest(str(tmp_path))
