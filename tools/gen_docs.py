"""Rewrite the config reference in README.md from the pydantic models (run by `make docs`)."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from job.config import Config  # noqa: E402

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def reference_markdown() -> str:
    """The config reference (every key, its default and description), from the pydantic models."""
    lines = ["| key | default | description |", "|---|---|---|"]

    def fmt(value) -> str:
        return (
            "null"
            if value is None
            else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        )

    for name, field in Config.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for key, sub in ann.model_fields.items():
                row = f"`{name}.{key}` | `{fmt(sub.default)}` | {_one_line(sub.description)}"
                lines.append(f"| {row} |")
        else:
            lines.append(f"| `{name}` | `{fmt(field.default)}` | {_one_line(field.description)} |")
    return "\n".join(lines)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def render(readme: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{reference_markdown()}\n{END}", readme)


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
