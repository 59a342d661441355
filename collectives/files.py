"""Reading and writing a file a user or the environment names, without trusting what it is.

Example::

    text = read_regular(Path("tuning.json"), limit=16 << 20)
    with folder_locked(path.parent):        # a read-modify-write no other writer interleaves
        write_atomically(path, text)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["folder_locked", "read_regular", "write_atomically"]


def read_regular(path: Path, limit: int) -> str:
    """The text of the regular file at `path`; ValueError for what is no regular file or
    holds more than `limit` bytes (a FIFO would block the reader for good, /dev/zero fill
    its memory); OSError as open raises it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # (opening a FIFO must not block)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            text = stream.read(limit + 1)
    finally:
        os.close(fd)
    if len(text) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return text.decode()


def write_atomically(path: Path, text: str) -> None:
    """Replace the file at `path` by `text` at once: readers see the old file or the new
    one, never a part. Written through a new file of its own beside it (O_EXCL, a random
    name: a planted symlink is not followed, and concurrent writers do not share it), with
    the permissions a plain open would give it (0666 less the umask)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextlib.contextmanager
def folder_locked(folder: Path) -> Iterator[None]:
    """`folder` locked against the other writers that lock it (flock), e.g. for a
    read-modify-write of a file in it; released when the block ends. A folder this process
    may write but not read (mode 0300) cannot be opened to lock: the block then runs
    unlocked, as before there was a lock."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        fd = None  # (the block runs outside this handler: its errors chain to nothing)
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _umask() -> int:
    """The process's umask, read without setting it (setting it, even for an instant, races
    with other threads creating files: the fortieth review saw 0600 files and the umask
    left at 077); where the kernel does not say it (before Linux 4.7), 077, the
    strictest."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o077
