"""MPI's own collectives called straight through mpi4py: the baseline column ``mpi``.

Outside the library entirely (no Communicator, no transport of ours): what a user who
has only mpi4py writes, on buffers allocated once. Datatypes are MPI's own for the
NumPy type code (float16 included, as MPICH's MPIX_C_FLOAT16); a dtype MPI has no type for
(bfloat16) travels as bytes and is reduced by a NumPy user op, as a user would have to.
``avg`` is MPI's SUM followed by a division in place: MPI has no average.

Example::

    datatype, mpi_op = reduction(np.dtype(np.float32), "sum")
    mpi_comm.Allreduce([x, datatype], [out, datatype], op=mpi_op)
    finish(out, "sum", mpi_comm.size)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

__all__ = ["MPI_BASELINE", "Algorithm", "buffer", "datatype", "finish", "reduction"]

MPI_BASELINE = "mpi"  # the column's label and its "algorithm" in the JSON rows
_UFUNCS = {"sum": np.add, "avg": np.add, "max": np.maximum, "min": np.minimum}
_MPI_OPS = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


@dataclass(frozen=True)
class Algorithm:
    """A column group: MPI's own collective (``mpi``), or the library's call with this
    algorithm (``default``: the library's choice, no algorithm passed)."""

    algorithm: str

    @property
    def label(self) -> str:
        return self.algorithm

    def fields(self) -> dict[str, object]:
        return {"algorithm": self.algorithm}


@functools.cache
def _predefined(dtype: np.dtype) -> MPI.Datatype | None:
    """MPI's own datatype for ``dtype`` (mpi4py's mapping), None when MPI has none."""
    try:
        return MPI.Datatype.fromcode(dtype.char)
    except (KeyError, ValueError):
        return None


@functools.cache
def datatype(dtype: np.dtype) -> MPI.Datatype:
    """MPI's datatype for ``dtype``, or a contiguous byte type of its size when it has none."""
    return _predefined(dtype) or MPI.BYTE.Create_contiguous(dtype.itemsize).Commit()


def buffer(array: np.ndarray) -> list:
    """mpi4py's ``[buffer, datatype]`` for a contiguous array of any dtype."""
    return [array.view(np.uint8), datatype(array.dtype)]


@functools.cache
def _numpy_op(dtype: np.dtype, redop: str) -> MPI.Op:
    """An MPI user op applying NumPy's ufunc for ``redop`` to ``dtype`` elements."""
    ufunc = _UFUNCS[redop]

    def apply(inbuf, inoutbuf, _datatype) -> None:
        into = np.frombuffer(inoutbuf, dtype=dtype)
        ufunc(into, np.frombuffer(inbuf, dtype=dtype), out=into)

    return MPI.Op.Create(apply, commute=True)


def reduction(dtype: np.dtype, redop: str) -> MPI.Op:
    """The MPI op reducing ``dtype`` with ``redop`` (SUM for avg; see :func:`finish`)."""
    return _MPI_OPS[redop] if _predefined(dtype) is not None else _numpy_op(dtype, redop)


def finish(out: np.ndarray, redop: str, nranks: int) -> None:
    """Turn MPI's sum into the average in place for ``avg`` (rounding down for integers,
    as the library does); nothing for the other reductions."""
    if redop != "avg":
        return
    if out.dtype.kind == "i":
        np.floor_divide(out, nranks, out=out)
    else:
        np.divide(out, out.dtype.type(nranks), out=out)
