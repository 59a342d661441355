"""NCCL transport over `cupy.cuda.nccl`: GPU point-to-point for the plans, ncclAllReduce as native.

Point-to-point runs over *channels*: one two-rank NCCL communicator per ordered pair of ranks
(a -> b: a only sends on it, b only receives), each with its own CUDA stream on both sides.
A channel is a FIFO: the k-th send of a meets the k-th receive of b, and nothing else waits
on it. Why not one communicator with ncclGroupStart/End: NCCL runs a group as one kernel
that ends only when every operation in it met its peer, and a stream runs one kernel after
another, so every receive would have to share a group with the sends its peers need first.
The executor posts a round's sends at once but its reduce-receives a few at a time (as
scratch slots free up), and rounds of hierarchical and torus plans talk to several peers:
such groups deadlock (tests/test_nccl_grouping.py shows it on a model of NCCL's semantics).
Channels give MPI's semantics instead (every posted operation progresses on its own), which
every plan already runs on.

Order with the compute stream (the current CuPy stream, where kernels reduce): a channel
stream waits for an event recorded on the compute stream when the operation is posted, so
a send reads, and a receive overwrites, the buffer as the compute stream left it then. A
request completes when an event recorded after it on the channel stream has passed; the
host polls those events against the deadline, and the executor reduces only after that.

Channels are built and connected at construction (2(p-1) two-rank communicators per rank),
in one global order of pairs, so no rank waits on a peer that waits on another.
`native` is ncclAllReduce on a world communicator, on the compute stream. Small control
traffic (agreement, topology, unique ids) goes over the host transport given at construction.
NCCL needs one GPU per rank: `unusable_reason` says why it cannot run (ranks sharing a GPU,
no device), so that `init(transport="nccl")` fails with the reason and "auto" uses MPI.

Example::

    mpi = MPITransport(MPI.COMM_WORLD.Dup())
    t = NCCLTransport.for_local_rank(mpi, mpi.node_keys())
    t.native_allreduce(x, x, "sum", deadline)      # ncclAllReduce, in place
"""
from __future__ import annotations

from typing import Sequence

import cupy
import ml_dtypes
import numpy as np
from cupy.cuda import nccl

from ..errors import CollectiveError, CollectiveTimeout
from .polling import poll

__all__ = ["NCCLTransport", "nccl_dtype", "unusable_reason"]

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


class _Channel:
    """One direction between two ranks: a two-rank communicator and a stream of its own."""

    __slots__ = ("comm", "stream", "peer_index")

    def __init__(self, comm: nccl.NcclCommunicator, peer_index: int):
        self.comm = comm
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.peer_index = peer_index  # the other rank's index inside comm (0 or 1)


class _P2P:
    """A posted send or receive; done once the event after it on its channel has passed."""

    __slots__ = ("peer", "event", "done")

    def __init__(self, peer: int, event: cupy.cuda.Event | None):
        self.peer = peer
        self.event = event
        self.done = event is None  # empty messages never reach NCCL, on either side

    def test(self) -> bool:
        if not self.done and self.event.done:
            self.done = True
        return self.done


class NCCLTransport:
    """Point-to-point over per-direction channels and ncclAllReduce (one GPU per rank)."""

    name = "nccl"
    shared = None

    def __init__(self, control):
        """`control`: a host transport over the same ranks (MPI, torch.distributed), for the
        unique ids (`allgather_object`); the communicator keeps its control traffic there."""
        self.control = control
        self.rank = control.rank
        self.size = control.size
        self.device = cupy.cuda.Device()
        uid = control.allgather_object(nccl.get_unique_id() if self.rank == 0 else None)[0]
        with self.device:
            self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._broken: str | None = None
        self._channels: dict[tuple[int, int], _Channel] = {}  # (src, dst) -> channel
        self._channels = self._build_channels()

    @classmethod
    def for_local_rank(cls, control, node_keys: Sequence[object]) -> "NCCLTransport":
        """Collective: make GPU (node-local rank) current, then build the world communicator.

        Every rank must have checked `unusable_reason` first (and agreed that none has one).
        """
        rank = control.rank
        cupy.cuda.Device(list(node_keys[:rank]).count(node_keys[rank])).use()
        return cls(control)

    # -- point to point ---------------------------------------------------------------------

    def isend(self, buf: cupy.ndarray, peer: int, tag: int) -> _P2P:
        return self._post(buf, peer, send=True)

    def irecv(self, buf: cupy.ndarray, peer: int, tag: int) -> _P2P:
        return self._post(buf, peer, send=False)

    def wait_all(self, requests: Sequence[_P2P], deadline: float, what: str) -> None:
        live = [r for r in requests if r is not None]
        self._poll(lambda: all(r.test() for r in live) or None, deadline, what,
                   lambda: {r.peer for r in live if not r.done})

    def wait_any(self, requests: list[_P2P], deadline: float, what: str) -> int:
        def first_done():
            return next((i for i, r in enumerate(requests) if r is not None and r.test()), None)

        return self._poll(first_done, deadline, what,
                          lambda: {r.peer for r in requests if r is not None})

    # -- native -----------------------------------------------------------------------------

    def native_allreduce(self, src: cupy.ndarray, dst: cupy.ndarray, op: str,
                         deadline: float) -> None:
        """ncclAllReduce of `src` into `dst` on the current stream; `src is dst`: in place."""
        self._check_usable()
        code = nccl_dtype(dst.dtype)
        with self.device:
            stream = cupy.cuda.get_current_stream()
            self._nccl(lambda: self.comm.allReduce(
                src.data.ptr, dst.data.ptr, dst.size, code, _OPS[op], stream.ptr))
            event = cupy.cuda.Event(block=False, disable_timing=True)
            event.record(stream)
        self._poll(lambda: event.done or None, deadline, "native NCCL all-reduce",
                   lambda: set(range(self.size)) - {self.rank})

    def abandon(self, sends: Sequence[_P2P], receives: Sequence[_P2P]) -> None:
        """Pending NCCL work cannot be withdrawn: abort the communicators (their kernels stop)."""
        if any(r is not None and not r.done for r in (*sends, *receives)):
            self._give_up("a collective was abandoned with NCCL work in flight")

    def poll(self, test, deadline: float, what: str):
        return self._poll(test, deadline, what, lambda: set(range(self.size)) - {self.rank})

    # -- internals --------------------------------------------------------------------------

    def _post(self, buf: cupy.ndarray, peer: int, *, send: bool) -> _P2P:
        self._check_usable()
        if buf.nbytes == 0:
            return _P2P(peer, None)
        channel = self._channels[(self.rank, peer) if send else (peer, self.rank)]
        with self.device:
            ready = cupy.cuda.Event(block=False, disable_timing=True)
            ready.record(cupy.cuda.get_current_stream())
            channel.stream.wait_event(ready)  # the buffer as the compute stream leaves it now
            call = channel.comm.send if send else channel.comm.recv
            self._nccl(lambda: call(buf.data.ptr, buf.nbytes, nccl.NCCL_UINT8,
                                    channel.peer_index, channel.stream.ptr))
            done = cupy.cuda.Event(block=False, disable_timing=True)
            done.record(channel.stream)
        return _P2P(peer, done)

    def _build_channels(self) -> dict[tuple[int, int], _Channel]:
        """Every channel of this rank, connected. Collective.

        A two-rank init blocks until both ranks call it, and so does NCCL's first send or
        receive on a communicator (it sets up the connection then): all ranks go through
        the pairs in one sorted order, creating each channel and passing one byte over it,
        so the smallest pair not yet done always has both its ranks at it. Later sends and
        receives then never block the host, whatever order the plans post them in.
        """
        mine = {(self.rank, b): nccl.get_unique_id() for b in range(self.size) if b != self.rank}
        ids = {pair: uid for table in self.control.allgather_object(mine)
               for pair, uid in table.items()}
        channels = {}
        with self.device:
            byte = cupy.zeros(1, cupy.uint8)
            for a, b in sorted(ids):
                if self.rank in (a, b):
                    me = 0 if self.rank == a else 1
                    channel = _Channel(nccl.NcclCommunicator(2, ids[(a, b)], me), 1 - me)
                    call = channel.comm.send if me == 0 else channel.comm.recv
                    self._nccl(lambda: call(byte.data.ptr, 1, nccl.NCCL_UINT8,
                                            channel.peer_index, channel.stream.ptr))
                    channel.stream.synchronize()
                    channels[(a, b)] = channel
        return channels

    def _poll(self, test, deadline: float, what: str, peers):
        """`test()`'s first result other than None, or give up (abort NCCL) at the deadline."""
        self._check_usable()
        return poll(test, deadline, lambda: self._give_up(
            f"timed out waiting for {what}: NCCL work with rank(s) {sorted(peers())} did not complete"),
            idle_sleep=IDLE_SLEEP)

    def _nccl(self, call) -> None:
        try:
            call()
        except nccl.NcclError as error:
            raise self._give_up(f"NCCL failed: {error}") from error

    def _give_up(self, why: str) -> CollectiveError:
        """Abort the NCCL communicators (their kernels may never end) and say so."""
        self._broken = (f"rank {self.rank}: {why}; the NCCL communicators were aborted, so "
                        f"this Communicator is unusable: end the job (comm.abort()) or init anew")
        comms = [self.comm, *(c.comm for c in self._channels.values())]
        for comm in comms:
            try:
                comm.abort()
            except nccl.NcclError:
                pass  # already failed: the message above is what the caller needs
        kind = CollectiveTimeout if why.startswith("timed out") else CollectiveError
        return kind(self._broken)

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise CollectiveError(self._broken)
