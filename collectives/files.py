"""Reading a file a user or the environment names, without trusting what it is.

Example::

    text = read_regular(Path("tuning.json"), limit=16 << 20)
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["read_regular"]


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
