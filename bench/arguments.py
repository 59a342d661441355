"""Argument checks every bench tool shares: each bad value is refused in one line (exit
status 2) by the parser, before any rank starts.

Example::

    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--budget", type=positive_seconds, default=0.2)
    parser.add_argument("--sizes", type=size_list, default="8K,64K,1M")
    args = parser.parse_args(argv)
    refuse_beyond_memory(parser, max(args.sizes), launch.ranks_here(args.np, None))
"""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from bench.sizes import parse_size

if TYPE_CHECKING:
    from bench.cluster.rate import LinkRate

__all__ = ["link_rate", "positive_int", "positive_seconds", "refuse_beyond_memory",
           "size_list"]


def positive_seconds(text: str) -> float:
    """A time from the command line: a finite number of seconds above 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"need a number of seconds above 0, got {text!r}")
    return seconds


def positive_int(text: str) -> int:
    """A count from the command line: an integer above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"need an integer above 0, got {text!r}")
    return value


def size_list(text: str) -> tuple[int, ...]:
    """Comma-separated message sizes (``8,4K,1M``), each at least 1 byte, each once (a
    size twice was measured twice, its rows merged or repeated)."""
    try:
        sizes = tuple(parse_size(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if 0 in sizes:
        raise argparse.ArgumentTypeError(f"a size of 0 bytes in {text!r}: sizes start at 1 byte")
    twice = sorted({size for size in sizes if sizes.count(size) > 1})
    if twice:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(str, twice))} bytes given twice in {text!r}")
    return sizes


def link_rate(text: str) -> LinkRate | None:
    """A link rate as tc writes it (``1gbit``); None for ``none`` (unshaped)."""
    from bench.cluster.rate import LinkRate

    try:
        return LinkRate.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def refuse_beyond_memory(parser: Any, max_bytes: int, nranks: int, *, flag: str = "-e") -> None:
    """``parser.error`` when `nranks` ranks on this machine, each with buffers of
    `max_bytes`, would not fit in its memory (bench.environment.check_memory; its advice
    names `flag`, the option that sets `max_bytes`)."""
    from bench.environment import check_memory

    try:
        check_memory(max_bytes, nranks, flag=flag)
    except ValueError as error:
        parser.error(str(error))
