"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash or a full disk mid-write leaves the old file intact, never a half-written one, but the temp file
of the interrupted write stays behind: this module names temp files and folders (`.NAME.XXXXXXXX.tmp`,
`.NAME.tmp`), so it alone can tell them from anything else, and sweep a folder of them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


TEMP_SUFFIX = ".tmp"
# `.NAME.tmp` (a folder written whole, then renamed: temp_dir_for) or `.NAME.` + mkstemp's 8 random
# characters + `.tmp` (a file: atomic_write). Nothing else a run or a project holds is named so.
_TEMP_NAME = re.compile(r"\.(?P<target>.+?)(?:\.[a-z0-9_]{8})?" + re.escape(TEMP_SUFFIX))


def temp_dir_for(final: Path) -> Path:
    """The hidden folder to fill before renaming it to `final` (a checkpoint, a model folder)."""
    final = Path(final)
    return final.with_name(f".{final.name}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    """Whether `name` is the name of a temp file or folder of an atomic write (one left by a crash, say)."""
    return _TEMP_NAME.fullmatch(name) is not None


def sweep(folder: Path) -> list[Path]:
    """Remove the temp files and folders directly in `folder`, the leftovers of writes that were killed
    (the write itself removes them on any error it lives through); nothing else is touched. Only call it
    on a folder no other process is writing into at the moment. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not is_temp_name(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path), then move tmp_path over path. The temp file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); a caption or a LoRA must stay readable by the artist's
        # other programs (a UI running as another user, a sync tool): keep the old file's mode, else the
        # mode any new file gets under the user's umask.
        os.chmod(tmp_path, _mode_for(path))
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        named = naming(e, path)  # the file the artist knows, not the temp file
        if named is e:
            raise
        raise named from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def naming(error: OSError, path: Path) -> OSError:
    """The same OSError (errno, message, subclass) about `path`: a write's own error names no file, and a
    message without one cannot say which file did not fit on the disk."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, str(path))


# Read once, at import (single-threaded): os.umask can only be read by setting it, which would race
# with threads creating files later.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode("utf-8"))
