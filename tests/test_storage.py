"""job.storage on the local filesystem, by plain path and by file:// URI (no network)."""

import os

import pyarrow.fs as pafs
import pytest

from job import storage


@pytest.mark.parametrize(
    "path, expected",
    [
        ("s3://bucket/run", True),
        ("gs://bucket/run/ckpt", True),
        ("file:///tmp/run", True),
        ("/tmp/run", False),
        ("runs/exp1", False),
        ("C:\\runs", False),
    ],
)
def test_is_uri(path, expected):
    assert storage.is_uri(path) is expected


def test_join_local_path_uses_os_path(tmp_path):
    assert storage.join(str(tmp_path), "a", "b.txt") == os.path.join(str(tmp_path), "a", "b.txt")
    assert storage.join("runs", "exp") == os.path.join("runs", "exp")


@pytest.mark.parametrize("base", ["s3://bucket/run", "s3://bucket/run/", "s3://bucket/run//"])
def test_join_uri_uses_single_slashes(base):
    """URIs are joined with "/" whatever the OS, and a trailing slash on the base is not doubled."""
    assert storage.join(base, "ckpt", "model.pt") == "s3://bucket/run/ckpt/model.pt"


def test_fs_and_path_local_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.fs_and_path("sub/file.txt")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "sub" / "file.txt")


def test_fs_and_path_file_uri(tmp_path):
    fs, path = storage.fs_and_path(f"file://{tmp_path}/x.bin")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == f"{tmp_path}/x.bin"


def test_exists(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    assert storage.exists(str(tmp_path / "f"))
    assert storage.exists(str(tmp_path / "d"))
    assert not storage.exists(str(tmp_path / "missing"))
    assert storage.exists(f"file://{tmp_path}/f")
    assert not storage.exists(f"file://{tmp_path}/missing")


def test_bytes_round_trip_creates_parent_dirs(tmp_path):
    data = bytes(range(256)) * 3
    path = str(tmp_path / "a" / "b" / "blob.bin")
    storage.write_bytes(path, data)
    assert storage.read_bytes(path) == data
    assert (tmp_path / "a" / "b" / "blob.bin").read_bytes() == data


def test_text_round_trip_is_utf8(tmp_path):
    text = "naïve café – 東京 😀\nsecond line\n"
    path = str(tmp_path / "t.txt")
    storage.write_text(path, text)
    assert storage.read_text(path) == text
    assert (tmp_path / "t.txt").read_bytes() == text.encode("utf-8")


def test_round_trip_through_file_uri(tmp_path):
    uri = f"file://{tmp_path}/sub/u.txt"
    storage.write_text(uri, "über")
    assert (tmp_path / "sub" / "u.txt").read_text(encoding="utf-8") == "über"
    assert storage.read_text(uri) == "über"
    assert storage.read_bytes(str(tmp_path / "sub" / "u.txt")) == "über".encode()


def test_write_overwrites(tmp_path):
    path = str(tmp_path / "f.txt")
    storage.write_text(path, "a much longer first version")
    storage.write_text(path, "short")
    assert storage.read_text(path) == "short"


def test_list_dir_missing_is_empty(tmp_path):
    assert storage.list_dir(str(tmp_path / "nope")) == []
    assert storage.list_dir(f"file://{tmp_path}/nope") == []


def test_list_dir_gives_base_names(tmp_path):
    storage.write_text(str(tmp_path / "run" / "a.txt"), "1")
    storage.write_text(str(tmp_path / "run" / "b.txt"), "2")
    storage.makedirs(str(tmp_path / "run" / "sub"))
    storage.write_text(str(tmp_path / "run" / "sub" / "deep.txt"), "3")
    assert sorted(storage.list_dir(str(tmp_path / "run"))) == ["a.txt", "b.txt", "sub"]
    assert sorted(storage.list_dir(f"file://{tmp_path}/run")) == ["a.txt", "b.txt", "sub"]


def test_delete_file(tmp_path):
    path = str(tmp_path / "f")
    storage.write_bytes(path, b"x")
    storage.delete(path)
    assert not os.path.exists(path)
    assert not storage.exists(path)


def test_makedirs_nested_and_idempotent(tmp_path):
    path = str(tmp_path / "a" / "b" / "c")
    storage.makedirs(path)
    storage.makedirs(path)
    assert os.path.isdir(path)


def test_delete_dir_is_recursive(tmp_path):
    storage.write_text(str(tmp_path / "d" / "e" / "f.txt"), "x")
    storage.write_text(str(tmp_path / "keep.txt"), "y")
    storage.delete_dir(str(tmp_path / "d"))
    assert not storage.exists(str(tmp_path / "d"))
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_open_output_failed_block_leaves_nothing(tmp_path):
    """A block that raises lands no file at the path and leaves no .tmp- file behind."""
    path = tmp_path / "out" / "model.pt"
    with pytest.raises(RuntimeError, match="boom"), storage.open_output(str(path)) as f:
        f.write(b"half of a checkpoint")
        raise RuntimeError("boom")
    assert not path.exists()
    assert os.listdir(tmp_path / "out") == []


def test_open_output_failed_block_keeps_existing_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), storage.open_output(str(path)) as f:
        f.write(b"new but incomplete")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_open_output_completed_block_replaces_file(tmp_path):
    """While the block runs readers still see the old file; afterwards the new one, no leftovers."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"old contents")
    with storage.open_output(str(path)) as f:
        f.write(b"new")
        f.flush()
        assert path.read_bytes() == b"old contents"
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_open_output_new_file_appears_only_at_the_end(tmp_path):
    path = tmp_path / "sub" / "fresh.bin"
    with storage.open_output(str(path)) as f:
        f.write(b"abc")
        f.flush()
        assert not path.exists()
        names = os.listdir(tmp_path / "sub")
        assert len(names) == 1 and names[0].startswith("fresh.bin.tmp-")
    assert path.read_bytes() == b"abc"
    assert os.listdir(tmp_path / "sub") == ["fresh.bin"]


def test_parquet_round_trip_columns_and_row_count(tmp_path):
    import pyarrow as pa

    path = str(tmp_path / "sub" / "t.parquet")
    storage.write_parquet(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), path)
    assert storage.parquet_rows(path) == 3
    assert storage.read_parquet(path, ["b"]).to_pydict() == {"b": ["x", "y", "z"]}
    assert storage.read_parquet(path).column_names == ["a", "b"]
