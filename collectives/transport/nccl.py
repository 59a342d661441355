"""NCCL transport over `cupy.cuda.nccl`: GPU point-to-point for the plans, ncclAllReduce as native.

Sends and receives are buffered and launched as NCCL groups on the current CuPy stream when
a wait needs them (`p2p_groups.PairQueue` says which go together and why); a request
completes when a CUDA event recorded after its group has passed. The executor's reduce
kernels run on the same stream, so data order is stream order; the host waits only to
honour the deadline, polling events. NCCL has no tags: messages between two ranks match in
posting order, which the plans guarantee. Small control traffic (agreement, topology, the
unique id) goes over the MPI transport given at construction.

NCCL needs one GPU per rank: `for_local_rank` picks the device by node-local rank, and
`unusable_reason` says why NCCL cannot run here (e.g. ranks sharing a GPU), so that
`init(transport="nccl")` fails on every rank with the reason and `transport="auto"` falls
back to MPI.

Example::

    mpi = MPITransport(MPI.COMM_WORLD.Dup())
    t = NCCLTransport.for_local_rank(mpi, mpi.node_keys())
    t.native_allreduce(x, x, "sum", deadline)      # ncclAllReduce, in place
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import cupy
import ml_dtypes
import numpy as np
from cupy.cuda import nccl

from ..errors import CollectiveError, CollectiveTimeout
from .p2p_groups import PairQueue

__all__ = ["NCCLTransport", "nccl_dtype", "unusable_reason"]

SPIN_SECONDS = 0.05  # as MPITransport: spin (yielding the core), then sleep between polls
IDLE_SLEEP = 1e-4

_OPS = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
_DTYPES = {
    np.dtype(np.float16): nccl.NCCL_FLOAT16,
    np.dtype(ml_dtypes.bfloat16): getattr(nccl, "NCCL_BFLOAT16", None),  # NCCL >= 2.10
    np.dtype(np.float32): nccl.NCCL_FLOAT32,
    np.dtype(np.float64): nccl.NCCL_FLOAT64,
    np.dtype(np.int32): nccl.NCCL_INT32,
    np.dtype(np.int64): nccl.NCCL_INT64,
}


def nccl_dtype(dtype: np.dtype) -> int:
    """NCCL's code for `dtype` (TypeError naming what this cupy.cuda.nccl offers)."""
    code = _DTYPES.get(np.dtype(dtype))
    if code is None:
        offered = ", ".join(str(d) for d, c in _DTYPES.items() if c is not None)
        raise TypeError(
            f"NCCL's all-reduce does not take {np.dtype(dtype)} here (cupy.cuda.nccl offers "
            f"{offered}); use a plan algorithm such as 'ring', which reduces with our kernels"
        )
    return code


def unusable_reason(node_keys: Sequence[object], rank: int) -> str | None:
    """Why this rank cannot run NCCL (no device, no NCCL, GPUs shared), or None if it can."""
    if not nccl.available:
        return "cupy.cuda.nccl is not available (install nvidia-nccl-cu12 or -cu13)"
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return f"no usable CUDA device ({error})"
    local = list(node_keys).count(node_keys[rank])
    if local > devices:
        return (f"{local} ranks share a node with {devices} GPU(s); NCCL needs one GPU per "
                f"rank (ranks sharing a GPU: use transport='mpi')")
    return None


class _P2P:
    """A buffered send or receive; done once the event after its group has passed."""

    __slots__ = ("is_send", "buf", "peer", "event", "done")

    def __init__(self, is_send: bool, buf: cupy.ndarray, peer: int):
        self.is_send = is_send
        self.buf = buf
        self.peer = peer
        self.event: cupy.cuda.Event | None = None
        self.done = buf.nbytes == 0  # empty messages never reach NCCL, on either side

    @property
    def launched(self) -> bool:
        return self.done or self.event is not None

    def test(self) -> bool:
        if not self.done and self.event is not None and self.event.done:
            self.done = True
        return self.done


class NCCLTransport:
    """Point-to-point and native all-reduce over one NCCL communicator (one GPU per rank)."""

    name = "nccl"

    def __init__(self, control):
        """`control`: an MPITransport over the same ranks, for the unique id and small messages."""
        self.control = control
        self.rank = control.rank
        self.size = control.size
        self.device = cupy.cuda.Device()
        uid = control.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        with self.device:
            self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._queue: PairQueue[_P2P] = PairQueue()
        self._broken: str | None = None

    @classmethod
    def for_local_rank(cls, control, node_keys: Sequence[object]) -> "NCCLTransport":
        """Collective: make GPU (node-local rank) current, then build the communicator.

        Every rank must have checked `unusable_reason` first (and agreed that none has one).
        """
        rank = control.rank
        cupy.cuda.Device(list(node_keys[:rank]).count(node_keys[rank])).use()
        return cls(control)

    # -- point to point ---------------------------------------------------------------------

    def isend(self, buf: cupy.ndarray, peer: int, tag: int) -> _P2P:
        return self._post(_P2P(True, buf, peer))

    def irecv(self, buf: cupy.ndarray, peer: int, tag: int) -> _P2P:
        return self._post(_P2P(False, buf, peer))

    def wait_all(self, requests: Sequence[_P2P], deadline: float, what: str) -> None:
        live = [r for r in requests if r is not None]
        self._poll(live, lambda: all(r.test() for r in live) or None, deadline, what)

    def wait_any(self, requests: list[_P2P], deadline: float, what: str) -> int:
        live = [r for r in requests if r is not None]

        def first_done():
            return next((i for i, r in enumerate(requests) if r is not None and r.test()), None)

        return self._poll(live, first_done, deadline, what)

    # -- native -----------------------------------------------------------------------------

    def native_allreduce(self, src: cupy.ndarray, dst: cupy.ndarray, op: str,
                         deadline: float) -> None:
        """ncclAllReduce of `src` into `dst` on the current stream; `src is dst`: in place."""
        self._check_usable()
        code = nccl_dtype(dst.dtype)
        with self.device:
            stream = cupy.cuda.get_current_stream()
            self._nccl_call(lambda: self.comm.allReduce(
                src.data.ptr, dst.data.ptr, dst.size, code, _OPS[op], stream.ptr))
            event = cupy.cuda.Event(block=False, disable_timing=True)
            event.record(stream)
        self._poll([], lambda: event.done or None, deadline, "native NCCL all-reduce",
                   peers=range(self.size))

    # -- control, through MPI ---------------------------------------------------------------

    def node_keys(self) -> list:
        return self.control.node_keys()

    def allgather_object(self, obj: object) -> list:
        return self.control.allgather_object(obj)

    def barrier(self) -> None:
        self.control.barrier()

    def abort(self, errorcode: int = 1) -> None:
        self.control.abort(errorcode)

    # -- internals --------------------------------------------------------------------------

    def _post(self, request: _P2P) -> _P2P:
        self._check_usable()
        if not request.done:
            self._queue.add(request, is_send=request.is_send)
        return request

    def _launch_needed(self, waited: list[_P2P]) -> None:
        """Launch every pair; if no waited request could then complete, launch the rest too."""
        groups = self._queue.pairs()
        for group in groups:
            self._launch(group)
        in_flight = any(r.launched and not r.done for r in waited)
        if not in_flight and any(not r.launched for r in waited):
            for group in self._queue.drain():
                self._launch(group)

    def _launch(self, group: list[_P2P]) -> None:
        with self.device:
            stream = cupy.cuda.get_current_stream()

            def launch():
                nccl.groupStart()
                try:
                    for op in group:
                        call = self.comm.send if op.is_send else self.comm.recv
                        call(op.buf.data.ptr, op.buf.nbytes, nccl.NCCL_UINT8, op.peer, stream.ptr)
                finally:
                    nccl.groupEnd()

            self._nccl_call(launch)
            event = cupy.cuda.Event(block=False, disable_timing=True)
            event.record(stream)
        for op in group:
            op.event = event

    def _poll(self, waited: list[_P2P], test, deadline: float, what: str, peers=None):
        """Launch what `waited` needs, then call `test()` until it is not None or time is up."""
        self._check_usable()
        spin_until = time.monotonic() + SPIN_SECONDS
        while True:
            self._launch_needed(waited)
            result = test()
            if result is not None:
                return result
            now = time.monotonic()
            if now > deadline:
                stuck = sorted(set(peers) if peers is not None else
                               {r.peer for r in waited if not r.done})
                raise self._give_up(f"timed out waiting for {what}: NCCL work with rank(s) "
                                    f"{stuck} did not complete")
            if now > spin_until:
                time.sleep(IDLE_SLEEP)
            else:
                os.sched_yield()

    def _nccl_call(self, call) -> None:
        try:
            call()
        except nccl.NcclError as error:
            raise self._give_up(f"NCCL failed: {error}") from error

    def _give_up(self, why: str) -> CollectiveError:
        """Abort the NCCL communicator (its kernels may never end) and say so."""
        self._broken = (f"rank {self.rank}: {why}; the NCCL communicator was aborted, so this "
                        f"Communicator is unusable: end the job (comm.abort()) or init a new one")
        try:
            self.comm.abort()
        except nccl.NcclError:
            pass  # already failed: the message above is what the caller needs
        kind = CollectiveTimeout if why.startswith("timed out") else CollectiveError
        return kind(self._broken)

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise CollectiveError(self._broken)
