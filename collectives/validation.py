"""Checks of what the caller passed; each failure names the argument, expected vs got.

Example::

    >>> import numpy as np
    >>> check_array(np.zeros(3, np.complex64))
    Traceback (most recent call last):
    TypeError: unsupported dtype complex64; supported: float16, bfloat16, float32, float64, int32, int64
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Iterator, Sequence

import numpy as np

import kernels

from .options import check_dtype

__all__ = ["array_list", "check_array", "check_out", "check_outs", "is_array", "overlaps_itself",
           "sharing_pair"]


def is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (
        type(x).__module__.startswith("cupy") and type(x).__name__ == "ndarray"
    )


def array_list(items, what: str) -> list:
    """`items` (a list, tuple or other iterable of arrays) as a list; TypeError naming
    `what` for one array (it gave its rows) or a mapping (its keys)."""
    if not isinstance(items, Iterable) or hasattr(items, "__dlpack__") or isinstance(
            items, (np.ndarray, Mapping)):
        raise TypeError(f"{what} takes a list of arrays, got {type(items).__module__}."
                        f"{type(items).__qualname__}: pass [x] for one array, "
                        "list(d.values()) for a mapping")
    return list(items)


def check_array(x, name: str = "x") -> None:
    """`x` must be a NumPy or CuPy array of a supported dtype (no masked arrays)."""
    if not is_array(x):
        scalar_or_list = isinstance(x, (list, tuple, int, float, np.generic))
        hint = " (wrap it with np.asarray)" if scalar_or_list else ""
        raise TypeError(
            f"{name} must be a NumPy or CuPy array, got {type(x).__module__}.{type(x).__qualname__}"
            + hint
        )
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array: its mask would be ignored; pass "
                        f"{name}.filled(value) (the value masked elements should count as)")
    if isinstance(x, np.matrix):
        raise TypeError(f"{name} is an np.matrix, which stays 2-D when flattened; pass "
                        f"np.asarray({name})")
    try:
        check_dtype(x.dtype)
    except TypeError as error:  # (which of a call's arrays: the seventy-sixth review)
        raise TypeError(f"{name}: {error}") from None


def check_out(out, x, name: str = "out", x_name: str = "x") -> None:
    """`out` must be able to hold the result of reducing `x`: same type, shape and dtype.

    `out is x` reduces in place (x must be writable); any other `out` must not share memory
    with x.
    """
    writable = getattr(out.flags, "writeable", True) if is_array(out) else True
    if out is x:
        if not writable:
            raise ValueError(f"{name} is x but x is read-only; a call in place needs a "
                             "writable array")
        _check_own_memory(out, x_name)
        return
    module = kernels.array_module(x)  # a subclass (np.memmap) is as good as its base
    if (not is_array(out) or kernels.array_module(out) is not module
            or isinstance(out, (np.ma.MaskedArray, np.matrix))):
        raise TypeError(
            f"{name} must be a {module.__name__} array like x, "
            f"got {type(out).__module__}.{type(out).__qualname__}"
        )
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(
            f"{name} must have the result's shape and dtype: expected shape {x.shape} dtype "
            f"{x.dtype}, got shape {out.shape} dtype {out.dtype}"
        )
    if not writable:
        raise ValueError(f"{name} is read-only; pass a writable array")
    _check_own_memory(out, name)
    if kernels.array_module(x).shares_memory(out, x):
        if _same_view(out, x):
            raise ValueError(
                f"{name} is another view of exactly {x_name}'s memory, not {x_name} itself: "
                f"for in place pass the same object (v = b[0]; then {x_name}=v, {name}=v)")
        raise ValueError(f"{name} overlaps {x_name} partially; pass {name}={x_name} (the same "
                         "object) for in place, or a separate array")


def overlaps_itself(array) -> bool:
    """Whether two elements of `array` may share memory (a stride of 0, as np.broadcast_to
    and as_strided make, or strides that make elements meet): each stride, smallest
    first, must step past everything the smaller ones span. Sufficient, not exact: a
    layout that interleaves its rows without overlap (only as_strided makes one) counts
    as overlapping too. A C-contiguous array never does (the caller's fast test)."""
    span = array.itemsize
    for stride, extent in sorted((abs(st), n) for st, n in zip(array.strides, array.shape)
                                 if n > 1):
        if stride < span:
            return True
        span = stride * (extent - 1) + span
    return False


def _check_own_memory(out, name: str) -> None:
    """A result written to `out` must not overwrite itself (found by the ninth review: a
    stride-0 out got every element the last one's sum)."""
    if not out.flags.c_contiguous and overlaps_itself(out):
        raise ValueError(f"{name} has elements that may share memory (strides {out.strides} "
                         f"for shape {out.shape}); results written there could overwrite each "
                         "other: pass an array with memory of its own per element")


def _same_view(a, b) -> bool:
    """Whether a and b are views of the same elements in the same layout."""
    start = (lambda v: v.__array_interface__["data"][0]) if isinstance(a, np.ndarray) else \
        (lambda v: v.data.ptr)
    return start(a) == start(b) and a.shape == b.shape and a.strides == b.strides


def check_outs(outs: Sequence, arrays: Sequence) -> None:
    """Each out fits its array (check_out), and no out overlaps another out or another array
    (`out=[b, a]` for `[a, b]` would read one result while writing another).

    Sorts the extents once, so thousands of arrays cost little: when none meet (the common
    case, told by whole-array operations) that is all; else arrays whose extents meet are
    asked whether they really share memory. The clash named is the one of the lowest out.
    """
    plain = _plainly_in_place(outs, arrays)
    for i, (o, a) in enumerate(zip(outs, arrays)):
        if not (plain and o is a):
            check_out(o, a, name=f"out[{i}]", x_name=f"arrays[{i}]")
    others = [i for i, a in enumerate(arrays) if outs[i] is not a]
    extents = kernels.byte_extents(outs) + kernels.byte_extents([arrays[i] for i in others])
    spans = [(i, True) for i in range(len(outs))] + [(i, False) for i in others]
    clashes = []
    for a, b in _meeting(extents):
        pair = sorted((spans[a], spans[b]), key=lambda s: (not s[1], s[0]))  # the out first
        if pair[0][1] and not (pair[0][0] == pair[1][0] and pair[0][1] != pair[1][1]) \
                and _share(pair, outs, arrays):
            clashes.append(pair)
    if clashes:
        pair = min(clashes, key=lambda pair: (pair[0][0], not pair[1][1], pair[1][0]))
        first, second = sorted(pair, key=lambda s: (s[1], s[0]))  # arrays before outs
        raise ValueError(f"{_name(first)} and {_name(second)} share memory: every out must be "
                         "its own array's memory (in place) or memory no other array or out "
                         "uses")


def sharing_pair(arrays: Sequence, written: Sequence[bool] | None = None
                 ) -> tuple[int, int] | None:
    """(i, j), i < j, two of `arrays` that share memory, or None (extents sorted once;
    asked exactly only where they meet, the first such pair named). With `written`, only
    pairs one of which is written count (two read-only views of one buffer are fine).
    Views interleaved in one buffer (the columns of a matrix) all meet: past a few pairs
    per array their elements are compared instead, naming the pair that meets first in
    memory (asking each pair took 7 s for 2000 columns; the 111th review)."""
    if written is None:
        written = [True] * len(arrays)
    elements = sum(x.size for x in arrays)
    # Asking a pair costs about 3 us, sorting an element about 0.5 us: the elements once
    # the pairs asked would cost more (a few large views of one buffer, the heads of an
    # attention matrix, stay pair by pair: 1 ms there, 1 s by elements; the 114th review).
    budget = max(_PAIRS_PER_ARRAY * len(arrays), elements // 4)
    found = []
    for count, (a, b) in enumerate(_meeting(kernels.byte_extents(arrays))):
        if count == budget and elements <= _ELEMENTS_COMPARED and all(
                isinstance(x, np.ndarray) for x in arrays):
            return _sharing_elements(arrays, written)
        if (written[a] or written[b]) and kernels.array_module(arrays[a]).shares_memory(
                arrays[a], arrays[b]):
            found.append((min(a, b), max(a, b)))
    return min(found, default=None)


_PAIRS_PER_ARRAY = 8
_ELEMENTS_COMPARED = 1 << 22  # (beyond, the pairs are asked: arrays per element, 80 B each)


def _sharing_elements(arrays: Sequence[np.ndarray], written: Sequence[bool]
                      ) -> tuple[int, int] | None:
    """sharing_pair by every element's bytes, sorted: where one starts before the furthest
    end so far, and that end's array is another (all read-only arrays counting as one),
    the two share memory; the first such overlap in address order is found if any is."""
    starts = [_element_addresses(a) for a in arrays]
    start = np.concatenate(starts)
    end = start + np.repeat([a.itemsize for a in arrays], [s.size for s in starts])
    index = np.repeat(np.arange(len(arrays)), [s.size for s in starts])
    owner = np.where(np.asarray(written, bool)[index], index, -1)
    order = np.argsort(start, kind="stable")
    start, end, index, owner = start[order], end[order], index[order], owner[order]
    furthest = np.maximum.accumulate(end)
    holder = np.maximum.accumulate(np.where(end == furthest, np.arange(end.size), 0))
    clash = np.flatnonzero((start[1:] < furthest[:-1]) & (owner[1:] != owner[holder[:-1]]))
    if not clash.size:
        return None
    a, b = int(index[holder[clash[0]]]), int(index[clash[0] + 1])
    return min(a, b), max(a, b)


def _element_addresses(a: np.ndarray) -> np.ndarray:
    """The address of each element of `a`, any layout."""
    addresses = np.array(a.__array_interface__["data"][0], np.int64)
    for length, stride in zip(a.shape, a.strides):
        addresses = np.add.outer(addresses, np.arange(length, dtype=np.int64) * stride)
    return addresses.reshape(-1)


def _meeting(extents: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The pairs of indices of non-empty [low, high) byte ranges that intersect, one at a
    time (interleaved views all meet: a list of them grew as the square); none at the cost
    of one sort in the common case (whole-array operations)."""
    if not _some_meet(extents):
        return
    open_spans: list[tuple[int, int, int]] = []
    for low, high, i in sorted((low, high, i) for i, (low, high) in enumerate(extents)
                               if high > low):
        open_spans = [s for s in open_spans if s[1] > low]
        for _, _, other in open_spans:
            yield i, other
        open_spans.append((low, high, i))


def _plainly_in_place(outs: Sequence, arrays: Sequence) -> bool:
    """Whether every out given in place is a writable C-contiguous NumPy array, which
    check_out passes: then only the separate outs need it (a pass over the list instead
    of a call per array, about 1 ms for 1000 gradients in place)."""
    return all(type(a) is np.ndarray and a.flags.writeable and a.flags.c_contiguous
               for o, a in zip(outs, arrays) if o is a)


def _some_meet(extents: list[tuple[int, int]]) -> bool:
    """Whether two of the non-empty [low, high) byte ranges intersect."""
    bounds = np.array(extents, dtype=np.uint64).reshape(-1, 2)
    bounds = bounds[bounds[:, 1] > bounds[:, 0]]
    if len(bounds) < 2:
        return False
    bounds = bounds[np.argsort(bounds[:, 0], kind="stable")]
    return bool((bounds[1:, 0] < np.maximum.accumulate(bounds[:-1, 1])).any())


def _name(span) -> str:
    return f"{'out' if span[1] else 'arrays'}[{span[0]}]"


def _share(pair, outs, arrays) -> bool:
    a, b = ((outs if s[1] else arrays)[s[0]] for s in pair)
    return bool(kernels.array_module(a).shares_memory(a, b))
