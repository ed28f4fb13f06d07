"""The config reference (docs/config.md), generated from the pydantic models in `config.py`: every
key is declared once there, with its default and its description, and this page is only a view of
it. Regenerate with `make docs` (`python -m datatuner_core.config_reference > docs/config.md`);
a test fails when the page and the code disagree."""

from __future__ import annotations

import json
import sys
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import PipelineConfig

HEADER = """# Configuration reference

Generated from `datatuner_core/config.py` by `make docs`; do not edit by hand. A config is YAML
(see `configs/`); every key below may also be set with `--set section.key=value`. Unknown keys and
wrong types are errors that name the key. Local paths are relative to the current directory.
"""

TABLE_RULE = "|---|---|---|---|"


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "—"
    return f"`{json.dumps(value)}`"


def fields(model: type[BaseModel] = PipelineConfig, prefix: str = ""):
    """(dotted key, field) for every leaf key, sections flattened."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if _is_model(field.annotation):
            yield from fields(field.annotation, key + ".")
        else:
            yield key, field


def reference() -> str:
    lines = [HEADER]
    section = None
    for key, field in fields():
        head = key.split(".")[0] if "." in key else ""
        if head != section:
            section = head
            title = f"`{head}`" if head else "Top level"
            lines += [
                "",
                f"## {title}",
                "",
                "| key | type | default | meaning |",
                "|---|---|---|---|",
            ]
        text = " ".join((field.description or "").split()).replace("|", "\\|").replace("<", "&lt;")
        lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
