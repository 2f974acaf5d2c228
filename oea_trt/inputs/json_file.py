"""Read a JSON file a user pointed at: every error names the file and what it should hold."""
from __future__ import annotations

import json
import os

from oea_trt.inputs.errors import InputError

_KINDS = {dict: "an object {...}", list: "a list [...]"}


def read_json(path: str, what: str, kind: type = dict):
    """The parsed content of `path`, which must be JSON of type `kind` (dict or list).

    `what` names the input in messages ("--layer-k0 file", "config.json of --model DIR")."""
    if os.path.isdir(path):
        raise InputError(f"{what} {path} is a directory; expected a JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise InputError(f"{what} {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text file (expected UTF-8 JSON)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    if not isinstance(content, kind):
        raise InputError(f"{what} {path} must hold {_KINDS.get(kind, kind.__name__)}, "
                         f"got {type(content).__name__}")
    return content
