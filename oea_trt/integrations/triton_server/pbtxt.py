"""A small writer of protobuf text format for Triton model configs (config.pbtxt).

Configs are plain dicts shaped like Triton's ModelConfig message (model_config.proto):
  scalar fields -> str / int / float / bool, enum fields -> Enum("TYPE_INT32"),
  sub-messages -> dict, repeated messages -> list of dicts, repeated scalars -> list,
  map fields (parameters, input_map, output_map) -> dict of key -> value, written as repeated
  {key, value} entries, which is how text format spells a protobuf map.
Tests parse every file this writes with tritonclient's ModelConfig (google.protobuf.text_format).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

#: ModelConfig fields that are protobuf maps (written as repeated key/value entries).
MAP_FIELDS = frozenset({"parameters", "input_map", "output_map"})


class Enum(str):
    """An enum value, written bare (TYPE_INT32), not quoted."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted string with protobuf-compatible escapes
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} in a config.pbtxt")


def _message(fields: Dict[str, Any], indent: int) -> List[str]:
    pad = "  " * indent
    lines: List[str] = []
    for name, value in fields.items():
        if value is None:
            continue
        if name in MAP_FIELDS:
            for key, entry in value.items():
                lines.append(f"{pad}{name} {{")
                lines.append(f"{pad}  key: {_scalar(str(key))}")
                if isinstance(entry, dict):
                    lines.append(f"{pad}  value {{")
                    lines.extend(_message(entry, indent + 2))
                    lines.append(f"{pad}  }}")
                else:
                    lines.append(f"{pad}  value: {_scalar(entry)}")
                lines.append(f"{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{name} {{")
            lines.extend(_message(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{name} [")
            for i, item in enumerate(value):
                lines.append(f"{pad}  {{")
                lines.extend(_message(item, indent + 2))
                lines.append(f"{pad}  }}" + ("," if i < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{name}: [ " + ", ".join(_scalar(v) for v in value) + " ]")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return lines


def render(config: Dict[str, Any], header: str = "") -> str:
    """config.pbtxt text of one model config dict."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()] if header else []
    if lines:
        lines.append("")
    lines.extend(_message(config, 0))
    return "\n".join(lines) + "\n"
