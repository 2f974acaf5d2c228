"""Output paths: checked before the work starts, written all-or-nothing after it.

check_output_file / check_output_dir run first, so a run that would fail to save its results
fails in milliseconds instead of after the work. StagedOutputs then writes every output under a
temporary name in its final directory and renames them into place only when all were written:
an error or Ctrl-C leaves no partial output, and files that were there before are replaced only
with overwrite=True (a command's --overwrite flag).
"""
from __future__ import annotations

import os
import secrets
import shutil
from typing import Iterable, List, Tuple

from oea_trt.inputs.errors import InputError


def check_output_file(path: str, what: str, overwrite: bool = False) -> str:
    """`path` if a file can be written there: not a directory, its directory exists and is
    writable, and it does not exist yet (unless overwrite)."""
    if not path:
        raise InputError(f"{what} is empty; give a file name")
    if os.path.isdir(path):
        raise InputError(f"{what} {path} is a directory; give a file name inside it")
    if os.path.lexists(path):
        if not overwrite:
            raise InputError(f"{what} {path} already exists; pass --overwrite to replace it, or choose another name")
        if not os.access(path, os.W_OK):
            raise InputError(f"{what} {path} exists and is not writable")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        kind = "is a file" if os.path.exists(directory) else "does not exist"
        raise InputError(f"{what} {path}: directory {directory} {kind}; create it first or choose another path")
    _require_writable(directory, what, path)
    return path


def check_output_dir(path: str, what: str, files: Iterable[str] = (), overwrite: bool = False) -> str:
    """`path` if the named `files` can be written into it: an existing writable directory that
    does not hold them yet (unless overwrite), or a directory that can be created."""
    if not path:
        raise InputError(f"{what} is empty; give a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{what} {path} is a file; give a directory (it is created if missing)")
    if os.path.isdir(path):
        _require_writable(path, what, path)
        present = [f for f in files if os.path.lexists(os.path.join(path, f))]
        if present and not overwrite:
            raise InputError(f"{what} {path} already holds {', '.join(present)}; pass --overwrite to replace "
                             f"{'it' if len(present) == 1 else 'them'}, or choose another directory")
        return path
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise InputError(f"{what} {path} cannot be created: {ancestor} is a file")
    _require_writable(ancestor, what, path)
    return path


def _require_writable(directory: str, what: str, path: str) -> None:
    if not os.access(directory, os.W_OK | os.X_OK):
        where = "" if os.path.abspath(directory) == os.path.abspath(path) else f" ({directory})"
        raise InputError(f"{what} {path}{where} is not writable; choose a directory you can write to")


class StagedOutputs:
    """with StagedOutputs(overwrite) as out: write to out.path(final) for each output; on a clean
    exit they are renamed to their final names, on any exception (Ctrl-C included) they and the
    directories created for them are removed."""

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self._staged: List[Tuple[str, str]] = []
        self._created: List[str] = []
        self.written: List[str] = []      # final paths, once committed

    def __enter__(self) -> "StagedOutputs":
        return self

    def path(self, final: str) -> str:
        """Where to write the output that will end up at `final` (same directory and extension,
        so writers that pick a format from the extension still do)."""
        directory = os.path.dirname(os.path.abspath(final))
        self._make_dirs(directory)
        stem, ext = os.path.splitext(os.path.basename(final))
        tmp = os.path.join(directory, f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{ext}")
        self._staged.append((tmp, final))
        return tmp

    def directory(self, final: str) -> str:
        """A new empty directory to fill; on commit it replaces `final` (which must be absent or
        empty, or anything with overwrite=True)."""
        parent = os.path.dirname(os.path.abspath(final))
        self._make_dirs(parent)
        tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(final))}.{os.getpid()}-"
                                   f"{secrets.token_hex(4)}.partial")
        os.mkdir(tmp)
        self._staged.append((tmp, final))
        return tmp

    def _make_dirs(self, directory: str) -> None:
        missing = []
        while not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for d in reversed(missing):
            os.mkdir(d)
            self._created.append(d)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()
        return False

    def commit(self) -> List[str]:
        """Rename every written output into place; the final paths."""
        written = [(tmp, final) for tmp, final in self._staged if os.path.exists(tmp)]
        if not self.overwrite:
            taken = [final for tmp, final in written if os.path.lexists(final)
                     and not (os.path.isdir(tmp) and os.path.isdir(final) and not os.listdir(final))]
            if taken:
                raise InputError(f"{taken[0]} appeared while this command ran; nothing was written "
                                 "(pass --overwrite to replace it)")
        for tmp, final in written:
            if os.path.isdir(tmp):
                replace_directory(tmp, final)
            else:
                os.replace(tmp, final)
        self._staged = []
        self._created = []
        self.written = [final for _, final in written]
        return self.written

    def discard(self) -> None:
        for tmp, _ in self._staged:
            try:
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp)
                else:
                    os.remove(tmp)
            except OSError:
                pass
        for d in reversed(self._created):
            try:
                os.rmdir(d)
            except OSError:
                pass
        self._staged = []
        self._created = []


def replace_directory(new: str, final: str) -> None:
    """Move directory `new` to `final`, replacing whatever `final` was: the old one is renamed
    aside first and removed only once the new one is in place."""
    if os.path.isdir(final) and not os.listdir(final):
        os.rmdir(final)
    if not os.path.lexists(final):
        os.rename(new, final)
        return
    aside = f"{final}.{os.getpid()}-{secrets.token_hex(4)}.old"
    os.rename(final, aside)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(aside, final)
        raise
    if os.path.isdir(aside) and not os.path.islink(aside):
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.remove(aside)
