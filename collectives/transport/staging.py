"""CuPy buffers over the MPI transport: from device memory when MPI is CUDA-aware, else staged.

CUDA-aware MPI (detected with MPIX_Query_cuda_support, or set by COLLECTIVES_CUDA_AWARE_MPI=1
or 0) reads and writes device memory itself; we only synchronize the current stream before
handing it a buffer, since MPI knows nothing of streams.

Otherwise every message to or from a peer goes through that peer's *lane*: two pinned host
buffers of CHUNK_BYTES that the lane's chunks (each message cut into CHUNK_BYTES pieces, in
posting order) take in turn. A send copies chunk i+1 device -> host while chunk i is on the
wire; a receive copies chunk i host -> device while chunk i+1 arrives. Chunks of a lane are
posted to MPI in order on both sides, so they match. The copies run on the current CuPy
stream, after the kernels that produced the data and before those that read it (the device
side is `CudaCopies`; a test may pass another with the same methods). Ranks may share a
GPU: each process stages through its own buffers.

Example::

    t = StagedMPI(MPITransport(MPI.COMM_WORLD.Dup()))
    t.wait_all([t.isend(x_gpu, 1, tag)], deadline, "send")
"""
from __future__ import annotations

import ctypes
from collections import deque
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # imported when the first CuPy buffer arrives, so CPU jobs never load CuPy
    import cupy

__all__ = ["CHUNK_BYTES", "CudaCopies", "StagedMPI", "cuda_aware_mpi"]

CHUNK_BYTES = 1 << 20  # the ring's segment size: one chunk per segment, lanes pipeline them


def cuda_aware_mpi() -> bool:
    """Whether the MPI library moves device memory, in its own word (init passes
    COLLECTIVES_CUDA_AWARE_MPI instead where it is set).

    MPICH and Open MPI answer through MPIX_Query_cuda_support; an MPI without it counts as
    not CUDA-aware.
    """
    from mpi4py import MPI

    query = getattr(ctypes.CDLL(MPI.__file__), "MPIX_Query_cuda_support", None)
    if query is None:
        return False
    query.restype = ctypes.c_int
    return bool(query())


class CudaCopies:
    """The device side of staging: pinned host buffers, events, copies on the current stream."""

    def __init__(self):
        import cupy
        import cupyx

        self._cupy, self._cupyx = cupy, cupyx

    def pinned(self, nbytes: int) -> np.ndarray:
        return self._cupyx.empty_pinned((nbytes,), np.uint8)

    def event(self):
        return self._cupy.cuda.Event(block=False, disable_timing=True)

    def to_host(self, host: np.ndarray, buf, lo: int, hi: int, event=None) -> None:
        """host[:hi-lo] = bytes [lo, hi) of buf, after the stream's earlier work; then event."""
        self._copy(host.ctypes.data, buf.data.ptr + lo, hi - lo, to_host=True, event=event)

    def to_device(self, buf, lo: int, hi: int, host: np.ndarray, event=None) -> None:
        """Bytes [lo, hi) of buf = host[:hi-lo], before the stream's later work; then event."""
        self._copy(buf.data.ptr + lo, host.ctypes.data, hi - lo, to_host=False, event=event)

    def done(self, event) -> bool:
        return event.done

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def _copy(self, dst: int, src: int, nbytes: int, *, to_host: bool, event) -> None:
        runtime = self._cupy.cuda.runtime
        stream = self._cupy.cuda.get_current_stream()
        kind = runtime.memcpyDeviceToHost if to_host else runtime.memcpyHostToDevice
        if nbytes:
            runtime.memcpyAsync(dst, src, nbytes, kind, stream.ptr)
        if event is not None:
            event.record(stream)


class _Message:
    """One isend or irecv of a staged lane; `done` once its last chunk has landed."""

    __slots__ = ("buf", "peer", "tag", "left", "done")

    def __init__(self, buf, peer: int, tag: int, chunks: int):
        self.buf = buf
        self.peer = peer
        self.tag = tag
        self.left = chunks
        self.done = chunks == 0


class _Slot:
    """A pinned host buffer, the chunk it holds, and where that chunk is in its journey."""

    __slots__ = ("host", "event", "chunk", "request", "copying")

    def __init__(self, copies):
        self.host = copies.pinned(CHUNK_BYTES)
        self.event = copies.event()
        self.chunk: tuple[_Message, int, int] | None = None
        self.request = None
        self.copying = False


class _Lane:
    """Messages to (or from) one peer, staged through two slots, chunks in posting order."""

    def __init__(self, comm, copies, peer: int, is_send: bool):
        self.comm = comm
        self.copies = copies
        self.peer = peer
        self.is_send = is_send
        self.free = [_Slot(copies), _Slot(copies)]
        self.busy: deque[_Slot] = deque()  # slots in chunk order
        self.chunks: deque[tuple[_Message, int, int]] = deque()

    def add(self, message: _Message) -> None:
        nbytes = message.buf.nbytes
        for lo in range(0, nbytes, CHUNK_BYTES):
            self.chunks.append((message, lo, min(lo + CHUNK_BYTES, nbytes)))

    def progress(self) -> None:
        while self.free and self.chunks:  # start chunks: a copy out, or a receive
            slot = self.free.pop()
            slot.chunk = self.chunks.popleft()
            if self.is_send:
                self._copy(slot)
            else:
                slot.request = self.comm.Irecv(self._host(slot), self.peer, slot.chunk[0].tag)
            self.busy.append(slot)
        for slot in self.busy:  # advance in chunk order, so MPI sees chunks in order
            if self.is_send and slot.copying:
                if not self.copies.done(slot.event):
                    break
                slot.copying = False
                slot.request = self.comm.Isend(self._host(slot), self.peer, slot.chunk[0].tag)
            elif not self.is_send and not slot.copying and slot.request.Test():
                self._copy(slot)
        while self.busy and self._finished(self.busy[0]):
            slot = self.busy.popleft()
            message = slot.chunk[0]
            message.left -= 1
            message.done = message.left == 0
            slot.chunk = slot.request = None
            slot.copying = False
            self.free.append(slot)

    def _host(self, slot: _Slot):
        from mpi4py import MPI

        _, lo, hi = slot.chunk
        return [slot.host[: hi - lo], MPI.BYTE]

    def _copy(self, slot: _Slot) -> None:
        message, lo, hi = slot.chunk
        if self.is_send:
            self.copies.to_host(slot.host, message.buf, lo, hi, slot.event)
        else:
            self.copies.to_device(message.buf, lo, hi, slot.host, slot.event)
        slot.copying = True

    def _finished(self, slot: _Slot) -> bool:
        if self.is_send:
            return not slot.copying and slot.request.Test()
        return slot.copying and self.copies.done(slot.event)


class StagedMPI:
    """The Transport interface for CuPy buffers over an MPITransport (see the module doc)."""

    name = "mpi"
    shared = None

    def __init__(self, mpi, *, cuda_aware: bool | None = None, copies=None):
        """`cuda_aware` None: ask MPI (cuda_aware_mpi()) when the first buffer arrives; `copies`
        None: CudaCopies, made then too (so a CPU-only job never loads CuPy).

        Every rank must come to the same answer (one MPI library, one environment): a staged
        rank cuts messages into chunks that a CUDA-aware peer would not expect.
        """
        self.mpi = mpi
        self.rank = mpi.rank
        self.size = mpi.size
        self._cuda_aware = cuda_aware
        self._copies = copies
        self._lanes: dict[tuple[int, bool], _Lane] = {}
        self._kept: list[_Slot] = []  # slots of abandoned chunks: MPI may still use them
        self._host = np.empty(0, np.uint8)  # pinned, for native all-reduce; grows

    @property
    def cuda_aware(self) -> bool:
        if self._cuda_aware is None:
            self._cuda_aware = cuda_aware_mpi()
        return self._cuda_aware

    @property
    def copies(self):
        if self._copies is None:
            self._copies = CudaCopies()
        return self._copies

    def isend(self, buf: cupy.ndarray, peer: int, tag: int):
        return self._post(buf, peer, tag, is_send=True)

    def irecv(self, buf: cupy.ndarray, peer: int, tag: int):
        return self._post(buf, peer, tag, is_send=False)

    def wait_all(self, requests: Sequence, deadline: float, what: str) -> None:
        if self.cuda_aware:
            return self.mpi.wait_all(requests, deadline, what)
        live = [r for r in requests if r is not None]

        def test():
            self._progress()
            return all(r.done for r in live) or None

        self.mpi.poll(test, deadline, what)

    def wait_any(self, requests: list, deadline: float, what: str) -> int:
        if self.cuda_aware:
            return self.mpi.wait_any(requests, deadline, what)

        def test():
            self._progress()
            return next((i for i, r in enumerate(requests) if r is not None and r.done), None)

        return self.mpi.poll(test, deadline, what)

    def native_allreduce(self, src: cupy.ndarray, dst: cupy.ndarray, op: str,
                         deadline: float) -> None:
        """MPI's all-reduce on device memory (CUDA-aware, 32/64-bit types) or on a host copy.

        16-bit floats always go through the host: MPI reduces them with our NumPy kernels.
        """
        copies = self.copies
        if self.cuda_aware and dst.dtype.itemsize >= 4:
            copies.synchronize()
            return self.mpi.native_allreduce(src, dst, op, deadline)
        if self._host.nbytes < dst.nbytes:
            self._host = copies.pinned(dst.nbytes)
        host = self._host[: dst.nbytes]
        copies.to_host(host, src, 0, src.nbytes)
        copies.synchronize()
        values = host.view(dst.dtype)
        self.mpi.native_allreduce(values, values, op, deadline)  # the same object: in place
        copies.to_device(dst, 0, dst.nbytes, host)
        copies.synchronize()  # the host buffer is reused by the next call

    def poll(self, test, deadline: float, what: str):
        return self.mpi.poll(test, deadline, what)

    def abandon(self, sends: Sequence, receives: Sequence) -> None:
        """CUDA-aware messages are MPI requests; staged ones stop with their lanes, all
        of them (the executor abandons a failed plan's messages, and the communicator is
        unusable then). Chunks MPI still holds are given up as MPI's own requests
        (receives cancelled, each request kept), copies in flight are waited for, and
        every busy slot is kept, as MPI may still use it: a late peer's chunks landed in
        slots let go (the 115th review)."""
        busy = [(lane.is_send, slot) for lane in self._lanes.values() for slot in lane.busy]
        if busy:  # (a copy in flight read x, or wrote out, after the error: ended here)
            self.copies.synchronize()
        self._kept.extend(slot for _, slot in busy)
        held = [(is_send, slot) for is_send, slot in busy if slot.request is not None]
        self.mpi.abandon([*(sends if self.cuda_aware else ()),
                          *(slot.request for is_send, slot in held if is_send)],
                         [*(receives if self.cuda_aware else ()),
                          *(slot.request for is_send, slot in held if not is_send)])
        self._lanes.clear()

    def _post(self, buf: cupy.ndarray, peer: int, tag: int, *, is_send: bool):
        if self.cuda_aware:
            self.copies.synchronize()  # MPI reads or writes the buffer right away
            return (self.mpi.isend if is_send else self.mpi.irecv)(buf, peer, tag)
        lane = self._lanes.get((peer, is_send))
        if lane is None:
            lane = _Lane(self.mpi.comm, self.copies, peer, is_send)
            self._lanes[(peer, is_send)] = lane
        message = _Message(buf, peer, tag, -(-buf.nbytes // CHUNK_BYTES))
        lane.add(message)
        lane.progress()
        return message

    def _progress(self) -> None:
        for lane in self._lanes.values():
            lane.progress()
