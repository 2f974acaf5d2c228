"""Read a .safetensors header without loading tensors, and catch truncated or foreign files.

Format: 8 bytes little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}, then the data; a complete file is exactly
8 + N + the largest end offset long. A download cut short fails this size check in
microseconds, where loading it would fail deep inside the safetensors library.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, List

from oea_trt.inputs.errors import InputError

#: Larger headers are not written by any library (safetensors itself refuses > 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024


def safetensors_shapes(path: str) -> Dict[str, List[int]]:
    """{tensor name: shape} of a complete .safetensors file; InputError if it is not one."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(f"{path} is truncated or not a safetensors file ({size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise InputError(f"{path} is truncated or not a safetensors file (header of {length} bytes "
                                 f"in a {size}-byte file)")
            header = json.loads(f.read(length))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path} is corrupt or not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise InputError(f"{path} is corrupt or not a safetensors file (its header is not a JSON object)")
    shapes, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = entry["data_offsets"]
            shapes[name] = [int(d) for d in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path} is corrupt: tensor {name!r} has no valid shape/data_offsets") from None
        end = max(end, int(stop))
    expected = 8 + length + end
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise InputError(f"{path} is {state} ({size} bytes, its header describes {expected}); "
                         "download or save the model again")
    return shapes
