"""How a front end reports a failure: one line and an exit status, a traceback only on request.

Expected failures are the user's to fix and say so in one line: a bad input (InputError and the
other ValueErrors the checks raise, a missing file) exits with 2; the environment failing the
work (a missing optional package, a full disk, a permission, running out of memory) exits with
1. Anything else is a bug in oea-trt: one line that says so, status 1, and the traceback with
--debug or OEA_TRT_DEBUG=1 (which also prints it for expected failures).
"""
from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Callable, Tuple

#: Environment variable that turns tracebacks on (read once, at the process boundary).
DEBUG_ENV = "OEA_TRT_DEBUG"

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130

#: What to install for the optional packages the commands import lazily.
INSTALL_HINTS = {
    "transformers": "pip install 'oea-trt[hf]'",
    "safetensors": "pip install 'oea-trt[hf]'",
    "tokenizers": "pip install 'oea-trt[hf]'",
    "matplotlib": "pip install 'oea-trt[plot]'",
    "tensorrt_llm": "TensorRT-LLM 1.2.1 runs in NVIDIA's container nvcr.io/nvidia/tensorrt-llm/release:1.2.1",
    "tensorrt": "pip install 'oea-trt[tensorrt]'",
    "tritonclient": "pip install 'tritonclient[grpc]'",
}


def debug_from_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def classify(exc: BaseException) -> Tuple[int, str]:
    """(exit status, one-line message) of a failure."""
    if isinstance(exc, ModuleNotFoundError):
        root = (exc.name or "").split(".")[0]
        hint = INSTALL_HINTS.get(root, f"pip install {root}" if root else "")
        return RUNTIME, f"this needs the Python package {root!r}, which is not installed here" + \
            (f" ({hint})" if hint else "")
    if isinstance(exc, FileNotFoundError):
        return USAGE, f"{exc.filename}: no such file or directory" if exc.filename else first_line(exc)
    if isinstance(exc, OSError):
        name = f" {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return RUNTIME, f"no space left on the device writing{name}; free some space or write elsewhere"
        what = exc.strerror or first_line(exc)
        return RUNTIME, f"cannot access{name}: {what}"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return RUNTIME, f"out of memory ({first_line(exc)[:200]}); use smaller sizes (--batch, --sequences, " \
                        "--forward-batch) or a machine with more memory"
    if isinstance(exc, ValueError):
        return USAGE, first_line(exc)
    return RUNTIME, (f"internal error: {type(exc).__name__}: {first_line(exc)[:300]} (a bug in oea-trt; "
                     f"rerun with --debug or {DEBUG_ENV}=1 for the traceback)")


def run_reporting_failures(work: Callable[[], int], prog: str, debug: bool = False) -> int:
    """work()'s exit status, or the status of its failure after printing `prog: error: ...`."""
    try:
        return int(work() or 0)
    except BrokenPipeError:  # stdout closed early (`oea-trt ... | head`): not a failure worth a message
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush would raise again
        return RUNTIME
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 (the front door: every failure becomes one line)
        if debug:
            traceback.print_exc()
        status, message = classify(exc)
        label = "" if message.startswith("internal error") else "error: "
        print(f"{prog}: {label}{message}", file=sys.stderr, flush=True)
        return status
