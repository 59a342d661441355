"""Small calls whose data rides with the agreement records.

With the check on every rank already sends every other rank a record; a call of a few
KiB puts its data in it, so the whole collective is that one exchange: one message
latency instead of the check's plus the collective's. Each rank then has every rank's
input and reduces them itself, in rank order, so every rank computes the same bits.
`auto` rides when the data of all peers fits RIDE_BYTES ((p - 1) * nbytes <= RIDE_BYTES);
the statistics call it "direct".

Example::

    payload = as_payload(x)                       # uint8 view, or None when it cannot ride
    rows = agreement.agree(signature, seq, deadline, payload=payload)
    reduce_rows(rows, size, x.dtype, Op.SUM, out)
"""
from __future__ import annotations

import numpy as np

from ..agreement import RIDE_BYTES, riding
from ..deterministic import fold_rows
from ..options import Op

__all__ = ["rides", "as_payload", "reduce_rows", "payloads", "RIDE_BYTES"]


def rides(nbytes: int, size: int) -> bool:
    """Whether a call of `nbytes` per rank rides with the records (the check on) on `size`
    ranks."""
    return size > 1 and 0 < nbytes and (size - 1) * nbytes <= RIDE_BYTES


def as_payload(x) -> np.ndarray:
    """x's bytes in C order as a flat uint8 array (a view when x is contiguous)."""
    flat = x.reshape(-1) if x.flags.c_contiguous else np.ascontiguousarray(x).reshape(-1)
    return flat.view(np.uint8)


def reduce_rows(rows, size: int, dtype: np.dtype, op: Op, out, lo: int = 0) -> None:
    """out = elements [lo, lo + out.size) of the ranks' payloads (flat, `dtype`) folded in
    rank order, as collectives.deterministic defines it (so small calls that ride are
    reproducible too)."""
    values = np.stack([riding(rows, r).view(dtype)[lo: lo + out.size] for r in range(size)])
    fold_rows(values, op, out)


def payloads(rows, size: int, dtype: np.dtype) -> list[np.ndarray]:
    """Every rank's payload as a flat array of `dtype`, in rank order."""
    return [riding(rows, r).view(dtype) for r in range(size)]
