"""Run configuration: pydantic models loaded from YAML, with `--set section.key=value` overrides.

Every key is validated; an unknown key or a bad value is an error that names the key, the value,
what is allowed, and where it came from (the YAML file or a --set pair).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from job import storage
from job.errors import ConfigError
from job.schema import (
    DataConfig,
    ModelConfig,
    ParallelFiles,
    ScalingSection,
    TrainConfig,
    TranslateConfig,
    VocabConfig,
    _Section,
)

# The sections are defined in job.schema; they are importable from here too.
__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "ParallelFiles",
    "ScalingSection",
    "TrainConfig",
    "TranslateConfig",
    "VocabConfig",
    "dump_config",
    "load_config",
    "validate_config",
]


class Config(_Section):
    """One training run."""

    name: str = Field("sample", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    """Run name: the run directory is storage_path/name."""
    storage_path: str = "runs"
    """Where runs live: a local path (made absolute) or a URI all nodes reach (s3, gs, NFS)."""
    data: DataConfig = DataConfig()
    vocab: VocabConfig = VocabConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingSection = ScalingSection()
    translate: TranslateConfig = TranslateConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.model.share_embeddings and self.vocab.type != "sentencepiece":
            raise ValueError(
                "model.share_embeddings requires the joint vocabulary (vocab.type: sentencepiece); "
                "set model.share_embeddings: false"
            )
        return self

    @property
    def run_dir(self) -> str:
        return storage.join(self.storage_path, self.name)


def _parse_override(pair: str) -> tuple[list[str], Any]:
    if "=" not in pair:
        raise ConfigError(f"--set {pair!r}: expected section.key=value")
    key, raw = pair.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {pair!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {pair!r}: value is not valid YAML ({exc})") from None
    return path, value


def _apply_override(tree: dict, path: list[str], value: Any, pair: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {pair}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def _format_errors(exc: ValidationError, source: str, overridden: set[str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = "--set" if key in overridden else source
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            section = _section_for(err["loc"][:-1])
            if section is not None:
                msg += f" (allowed: {', '.join(section.model_fields)})"
        value = err.get("input")
        shown = (
            ""
            if err["type"] in ("extra_forbidden", "missing") or isinstance(value, dict)
            else f" (got {value!r})"
        )
        lines.append(f"{where}: {key}: {msg}{shown}")
    return "invalid config: " + "; ".join(lines)


def _section_for(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Load a YAML run config, apply `section.key=value` overrides, validate.

    Relative local paths in the file (data, storage_path) stay relative to the working directory,
    as users type them; storage_path is made absolute because Ray Train requires it.
    """
    source = str(path) if path else "(defaults)"
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, got {type(tree).__name__}"
            )
    overridden: set[str] = set()
    for pair in overrides or []:
        keys, value = _parse_override(pair)
        _apply_override(tree, keys, value, pair)
        overridden.add(".".join(keys))
    return validate_config(tree, source, overridden)


def validate_config(
    tree: dict, source: str = "(config)", overridden: set[str] | None = None
) -> Config:
    tree = copy.deepcopy(tree)
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, overridden or set())) from None
    if not storage.is_uri(cfg.storage_path):
        cfg.storage_path = os.path.abspath(cfg.storage_path)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
