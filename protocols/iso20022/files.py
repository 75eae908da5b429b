"""Output written whole or not at all: folders staged under a temporary name, files replaced atomically.

Takes an output path; gives `check_folder` (refuse a folder that exists
and is not empty, before any work is done), `staged(folder)` (a context
manager yielding a temporary folder beside it, renamed into place when
the block ends cleanly and removed otherwise) and `write_whole(path,
lines)` (a temporary file beside it, synced, then renamed over it).
A run that stops part way leaves nothing at the output path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator


def check_folder(folder: str) -> None:
    """Raise FileExistsError unless `folder` is absent or an empty folder."""
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise FileExistsError(f"{folder} exists and is not an empty folder: choose another, or remove it")


@contextlib.contextmanager
def staged(folder: str) -> Iterator[str]:
    check_folder(folder)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".iso-", dir=parent)
    try:
        yield staging
        check_folder(folder)
        if os.path.isdir(folder):
            os.rmdir(folder)
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_whole(path: str, lines: Iterable[str]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, staging = tempfile.mkstemp(prefix=".iso-", suffix=".part", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise
