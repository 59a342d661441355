"""Reading and writing a file a user or the environment names, without trusting what it is.

Example::

    text = read_regular(Path("tuning.json"), limit=16 << 20)
    with folder_locked(path.parent):        # a read-modify-write no other writer interleaves
        write_atomically(path, text)
    write_atomically(Path("plot.png"), lambda handle: figure.savefig(handle, format="png"))
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["check_writable", "folder_locked", "read_regular", "special_file", "write_atomically"]

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


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


def special_file(path: Path) -> str | None:
    """What is at `path` ("a folder", "a FIFO", "a socket", "a character device", ...) when
    it is none of: nothing, a regular file, a symbolic link (which a write replaces, its
    target left alone); else None."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None)


def write_atomically(path: Path, content: str | Callable[[BinaryIO], object]) -> None:
    """Replace the file at `path` by `content` at once: readers see the old file or the new
    one, never a part. `content` is text (UTF-8), or a function that writes the bytes into
    the binary file it is given (``figure.savefig``). Written through a new file of its own
    beside it (O_EXCL, a random name: a planted symlink is not followed, and concurrent
    writers do not share it), with the permissions a plain open would leave: a regular
    file's own where one is there, else 0666 less the umask. A symlink at `path` is
    replaced, never followed; ValueError for a folder, FIFO, socket or device there
    (os.replace would put a file in a device's place)."""
    path = Path(path)
    kind = special_file(path)
    if kind is not None:
        raise ValueError(f"{path} is {kind}, not a regular file: not replaced")
    mode = _own_mode(path)
    # (a name of 255 bytes is a file's longest: its own would not fit beside ".x.tmp")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name[:200] + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException as error:
        os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None and error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from error  # (a full disk)
        raise


def _own_mode(path: Path) -> int:
    """The permission bits of the regular file at `path`, else 0666 less the umask."""
    try:
        status = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0o666 & ~_umask()
    return stat.S_IMODE(status.st_mode) if stat.S_ISREG(status.st_mode) else 0o666 & ~_umask()


def check_writable(path: str | Path) -> None:
    """ValueError now, rather than after minutes of measuring, when `path` cannot be
    written: a folder, FIFO, socket or device is there (a symlink is fine: write_atomically
    replaces it), the name ends in a separator (a folder's name: `out.json/` replaced the
    file out.json), or a file cannot be created in its folder (one is, and removed: /proc
    passed the folder's access check, then failed after the sweep)."""
    if str(path).endswith((os.sep, os.altsep or os.sep)):
        raise ValueError(f"cannot write {path}: a name ending in {os.sep!r} names a folder, "
                         "not a file")
    folder = os.path.dirname(os.path.abspath(path))
    kind = special_file(Path(path))
    if kind is not None:
        raise ValueError(f"cannot write {path}: {kind}, not a regular file")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {path}: {folder} is not a writable folder")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
    except OSError as error:
        raise ValueError(f"cannot write {path}: {error.strerror}") from None
    try:
        os.close(handle)
    finally:
        os.unlink(probe)


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
