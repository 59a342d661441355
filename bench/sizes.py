"""Message sizes as nccl-tests writes them: ``8``, ``1K``, ``16M``; the steps of a sweep.

Example::

    size_steps(min_bytes=parse_size("8"), max_bytes=parse_size("64K"), factor=8)
    format_size(1536)        # '1.5 KiB'
"""
from __future__ import annotations

import re

__all__ = ["MAX_STEPS", "format_size", "parse_size", "size_steps"]

MAX_STEPS = 1000  # sizes in one sweep (-i 1 up to 1T built a tuple of 10^12 and used up memory)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+)\s*([KMGT]?)(I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from an nccl-tests size: ``8``, ``1K``, ``16M``, ``256M``, ``1G`` (powers of 1024).

    >>> parse_size("16M")
    16777216
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 8, 1K, 16M, 1G)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def size_steps(*, min_bytes: int, max_bytes: int, factor: int | None = None,
               increment: int | None = None) -> tuple[int, ...]:
    """Message sizes from ``min_bytes`` to ``max_bytes``: times ``factor``, or plus ``increment``.

    >>> size_steps(min_bytes=8, max_bytes=64, factor=2)
    (8, 16, 32, 64)
    """
    if (factor is None) == (increment is None):
        raise ValueError("give exactly one of factor (-f) and increment (-i)")
    if min_bytes < 1 or max_bytes < min_bytes:
        raise ValueError(f"need 1 <= min bytes <= max bytes, got {min_bytes} and {max_bytes}")
    if factor is not None and factor < 2:
        raise ValueError(f"the step factor must be at least 2, got {factor}")
    if increment is not None and increment < 1:
        raise ValueError(f"the step increment must be at least 1 byte, got {increment}")
    if increment is not None and (max_bytes - min_bytes) // increment >= MAX_STEPS:
        raise ValueError(f"{min_bytes} to {max_bytes} bytes in steps of {increment} bytes is "
                         f"{(max_bytes - min_bytes) // increment + 1} sizes; at most "
                         f"{MAX_STEPS} (a larger -i, or -f)")
    sizes = []
    size = min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size = size * factor if factor is not None else size + increment
    return tuple(sizes)


def format_size(nbytes: int) -> str:
    """A short human size: ``8 B``, ``1 KiB``, ``1.5 MiB``, ``256 MiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"
