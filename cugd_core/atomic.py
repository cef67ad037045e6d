"""Atomic file writes: write to a temp file beside the target, then `os.replace` it into place.

A reader (or a resumed run that skips existing outputs) never sees a half-written file, and a
failed write leaves the old file, if any, untouched.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the temp files `atomic_path(path, suffix)` left behind when its process was killed
    (SIGKILL, power loss: no `finally` ran). Returns them. Only names of that exact form are touched."""
    path = Path(path)
    # mkstemp's names: prefix + 8 characters of [a-z0-9_] + suffix
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    try:
        stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:  # no folder yet: nothing left behind
        return []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Report an unusable folder before any work: create `folder` (with parents), write and remove a
    probe file in it, then remove the folders it had to create (a run that fails later leaves
    nothing behind; `atomic_path` creates them at the first write). Raises OSError saying which
    folder and why."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OSError(f"the {what} {folder} is a file, not a folder; choose a folder")
    created, p = [], folder
    while not p.exists() and p != p.parent:  # what mkdir will create, innermost first
        created.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cugd-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(f"cannot write to the {what} {folder}: {e.strerror or e}"
                      f"{f' ({e.filename})' if e.filename and str(e.filename) != str(folder) else ''}; "
                      "choose a folder you can write to") from None
    finally:
        for d in created:
            try:
                d.rmdir()
            except OSError:  # never made, or no longer empty
                pass
    return folder


def write_json_atomic(obj, path: str | os.PathLike, **dumps_kwargs) -> None:
    """`json.dumps(obj, indent=1, **dumps_kwargs)` written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, **dumps_kwargs))
