"""MPI transport over mpi4py: nonblocking byte transfers, bounded waits, MPI's own all-reduce."""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from mpi4py import MPI

import kernels

from ..errors import CollectiveTimeout
from .polling import poll

__all__ = ["MPITransport"]


_MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


def _as_bytes(buf: np.ndarray):
    """mpi4py buffer spec for a 1-D contiguous array of any dtype (bfloat16 included)."""
    return [buf.view(np.uint8), MPI.BYTE]


@functools.cache
def _user_op(dtype: np.dtype, op: str) -> MPI.Op:
    """An MPI op reducing `dtype` elements with our kernels (for types MPI lacks: fp16, bf16)."""

    def reduce(inbuf, inoutbuf, datatype):
        src = np.frombuffer(inbuf, dtype=dtype)
        dst = np.frombuffer(inoutbuf, dtype=dtype)
        kernels.reduce_into(dst, src, op)

    return MPI.Op.Create(reduce, commute=True)


@functools.cache
def _element_type(itemsize: int) -> MPI.Datatype:
    return MPI.BYTE.Create_contiguous(itemsize).Commit()


def _native_spec(buf: np.ndarray, op: str):
    """(buffer spec, MPI op) for an all-reduce of `buf`.

    16-bit floats, and float max/min, use a user op over our kernels: MPICH's MAX compares
    with `>`, so a NaN survives or not depending on the order, which differs between ranks.
    """
    kind = buf.dtype.kind
    if buf.dtype.itemsize >= 4 and (kind == "i" or (kind == "f" and op == "sum")):
        return [buf, MPI._typedict[buf.dtype.char]], _MPI_OPS[op]
    return [buf.view(np.uint8), _element_type(buf.dtype.itemsize)], _user_op(buf.dtype, op)


class MPITransport:
    """Point-to-point transport over an mpi4py communicator."""

    name = "mpi"

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._control = comm.Dup()  # agreement records, apart from the data messages

    def isend(self, buf: np.ndarray, peer: int, tag: int) -> MPI.Request:
        return self.comm.Isend(_as_bytes(buf), peer, tag)

    def irecv(self, buf: np.ndarray, peer: int, tag: int) -> MPI.Request:
        return self.comm.Irecv(_as_bytes(buf), peer, tag)

    def wait_all(self, requests: Sequence[MPI.Request], deadline: float, what: str) -> None:
        requests = list(requests)
        if requests:
            self.poll(lambda: MPI.Request.Testall(requests) or None, deadline, what)

    def wait_any(self, requests: list[MPI.Request], deadline: float, what: str) -> int:
        def test():
            index, done = MPI.Request.Testany(requests)
            return index if done and index != MPI.UNDEFINED else None

        return self.poll(test, deadline, what)

    def native_allreduce(self, src: np.ndarray, dst: np.ndarray, op: str, deadline: float) -> None:
        """MPI's all-reduce of `src` into `dst`; `src is dst` reduces in place."""
        recv, mpi_op = _native_spec(dst, op)
        send = MPI.IN_PLACE if src is dst else _native_spec(src, op)[0]
        request = self.comm.Iallreduce(send, recv, mpi_op)
        self.poll(lambda: request.Test() or None, deadline, "native MPI all-reduce")

    def node_keys(self) -> list[int]:
        """Per rank, the lowest rank of its shared-memory node (MPI's shared-memory split)."""
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        leader = node.allreduce(self.rank, op=MPI.MIN)
        node.Free()
        return self.comm.allgather(leader)

    def allgather_object(self, obj: object) -> list:
        return self.comm.allgather(obj)

    def allgather_record(self, record: np.ndarray, deadline: float, what: str) -> np.ndarray:
        """Every rank's `record` (1-D uint8, one length everywhere) as rows, row r from rank r.

        Point to point on a private communicator, so a timeout names the ranks not heard
        from; records of successive calls match in call order.
        """
        rows = np.empty((self.size, record.size), np.uint8)
        rows[self.rank] = record
        peers = [p for p in range(self.size) if p != self.rank]
        recvs = [self._control.Irecv([rows[p], MPI.BYTE], p, 0) for p in peers]
        sends = [self._control.Isend([record, MPI.BYTE], p, 0) for p in peers]
        try:
            self.wait_all(recvs + sends, deadline, what)
        except CollectiveTimeout:
            silent = [p for p, request in zip(peers, recvs) if not request.Test()]
            raise CollectiveTimeout(
                f"rank {self.rank}: timed out waiting for {what}: "
                f"nothing from rank(s) {silent or 'none (our sends were not taken)'}"
            ) from None
        return rows

    def abort(self, errorcode: int) -> None:
        """End every rank of the job now (MPI_Abort)."""
        self.comm.Abort(errorcode)

    def barrier(self) -> None:
        self.comm.Barrier()

    def poll(self, test, deadline: float, what: str):
        """`test()`'s first result other than None; CollectiveTimeout naming `what` past `deadline`."""
        return poll(test, deadline,
                    lambda: CollectiveTimeout(f"rank {self.rank}: timed out waiting for {what}"))
