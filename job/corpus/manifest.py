"""The prepared data's manifest: what it was made from (the input files with their sizes and
modification times, the columns, data.max_length, the vocabulary's hash and config), its row
counts, and its Parquet parts. Written last, so a directory without one is an unfinished
preparation. A run reuses prepared data (on --resume, or another run's with data.prepared) only
when the manifest matches, and otherwise says what changed."""

from __future__ import annotations

import json

import pyarrow.fs as pafs

from job import storage
from job.config import Config, ParallelFiles
from job.corpus.files import list_files
from job.errors import ConfigError

MANIFEST = "manifest.json"
VERSION = 1
PREPARED_DIR = "prepared"  # in a run directory
CHECKED_SPLITS = ("train", "valid")  # what training reads from the prepared data


def fingerprint(path) -> dict:
    """The input files of a corpus path with their size and modification time."""
    if path is None:
        return {"path": None, "files": []}
    names = [path.source, path.target] if isinstance(path, ParallelFiles) else list_files(path)
    files = []
    for name in names:
        fs, p = storage.fs_and_path(name)
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            files.append({"file": name, "size": None, "mtime": None})
            continue
        mtime = info.mtime.isoformat() if info.mtime is not None else None
        files.append({"file": name, "size": info.size, "mtime": mtime})
    return {"path": str(path), "files": files}


def what_it_was_made_from(cfg: Config) -> dict:
    d = cfg.data
    return {
        "inputs": {name: fingerprint(getattr(d, name)) for name in CHECKED_SPLITS},
        "columns": [d.source_column, d.target_column],
        "max_length": d.max_length,
        "vocab_config": cfg.vocab.model_dump(mode="json"),
    }


def changes(manifest: dict, cfg: Config) -> list[str]:
    """What differs between the prepared data and this run's config and input files."""
    if manifest.get("version") != VERSION:
        return [f"manifest version {manifest.get('version')} (this job reads {VERSION})"]
    now, out = what_it_was_made_from(cfg), []
    for name in CHECKED_SPLITS:
        old, new = manifest["inputs"][name], now["inputs"][name]
        if old["path"] != new["path"]:
            out.append(f"data.{name}: {old['path']} -> {new['path']}")
            continue
        before = {f["file"]: f for f in old["files"]}
        after = {f["file"]: f for f in new["files"]}
        for file in sorted(set(before) | set(after)):
            a, b = before.get(file), after.get(file)
            if a is None:
                out.append(f"{file}: a new file")
            elif b is None or b["size"] is None:
                out.append(f"{file}: gone")
            elif a != b:
                out.append(
                    f"{file}: changed (size {a['size']} -> {b['size']}, "
                    f"modified {a['mtime']} -> {b['mtime']})"
                )
    for key, label in (("columns", "data columns"), ("max_length", "data.max_length")):
        if manifest[key] != now[key]:
            out.append(f"{label}: {manifest[key]} -> {now[key]}")
    for key in sorted(set(manifest["vocab_config"]) | set(now["vocab_config"])):
        a, b = manifest["vocab_config"].get(key), now["vocab_config"].get(key)
        if a != b:
            out.append(f"vocab.{key}: {a!r} -> {b!r}")
    return out


def read_manifest(directory: str) -> dict | None:
    path = storage.join(directory, MANIFEST)
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_text(path))
    except ValueError:
        raise ConfigError(f"{path}: not a manifest this job wrote (not JSON)") from None


def write_manifest(directory: str, manifest: dict) -> None:
    storage.write_text(storage.join(directory, MANIFEST), json.dumps(manifest, indent=1))


def part_paths(directory: str, manifest: dict, split: str) -> list[tuple[str, int]]:
    """(path, rows) of a split's Parquet parts; paths in the manifest are relative to it."""
    parts = manifest["splits"].get(split, {}).get("parts", [])
    return [(storage.join(directory, name), rows) for name, rows in parts]
