"""Files in the run directory, which may be a local path or a URI (s3://, gs://) that pyarrow
reaches.

Local writes go to a temporary name first and are renamed into place, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_uri(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def fs_and_path(path: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem and in-filesystem path of a local path or URI."""
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def exists(path: str) -> bool:
    fs, p = fs_and_path(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def read_bytes(path: str) -> bytes:
    fs, p = fs_and_path(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def list_dir(path: str) -> list[str]:
    """Names in a directory (or under a prefix); [] when it does not exist."""
    fs, p = fs_and_path(path)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return []
    return [info.base_name for info in fs.get_file_info(pafs.FileSelector(p))]


def delete(path: str) -> None:
    fs, p = fs_and_path(path)
    fs.delete_file(p)


def delete_dir(path: str) -> None:
    fs, p = fs_and_path(path)
    fs.delete_dir(p)


def makedirs(path: str) -> None:
    fs, p = fs_and_path(path)
    fs.create_dir(p, recursive=True)


@contextmanager
def open_output(path: str):
    """A binary output stream that lands at `path` only if the block completes."""
    fs, p = fs_and_path(path)
    parent = p.rsplit("/", 1)[0]
    if parent:
        fs.create_dir(parent, recursive=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    if not is_uri(path):
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    # pyarrow closes (and so publishes) an object-store upload even when the block raised: write
    # aside, then move it into place (a copy on object stores), so a reader never sees half of it.
    try:
        with fs.open_output_stream(tmp) as f:
            yield f
        fs.move(tmp, p)
    finally:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)


def write_bytes(path: str, data: bytes) -> None:
    with open_output(path) as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_parquet(table: pa.Table, path: str) -> None:
    with open_output(path) as sink:
        pq.write_table(table, sink, compression="zstd")


def read_parquet(path: str, columns=None) -> pa.Table:
    fs, p = fs_and_path(path)
    with fs.open_input_file(p) as f:
        return pq.read_table(f, columns=None if columns is None else list(columns))


def parquet_rows(path: str) -> int:
    """Rows of a Parquet file, from its footer."""
    fs, p = fs_and_path(path)
    with fs.open_input_file(p) as f:
        return pq.ParquetFile(f).metadata.num_rows
