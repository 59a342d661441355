"""The Communicator: validated all-reduce over a transport, with plans run by the executor.

The flow of a call lives in `collectives.fusion` (packing, compression, results) and
`collectives.progress` (issue order, async); this class owns the transport, the cached
buffers and the flat all-reduce of one work buffer.
"""
from __future__ import annotations

import functools
import logging
import time

import numpy as np

import kernels

from . import fusion, tuner
from .agreement import Agreement
from .algorithms import plan_for
from .algorithms.executor import IDENTITY, buffer_sizes, run_plan
from .compression import ErrorFeedback, HalfCodec
from .config import Settings
from .options import Op
from .progress import Handle, ProgressEngine
from .stats import Stats, StatsRecorder, native_traffic, plan_traffic
from .topology import Topology

__all__ = ["Communicator"]

log = logging.getLogger("collectives")

TAG_LIMIT = 32768  # MPI guarantees tags up to 32767


class Communicator:
    """All-reduce among the ranks of one transport.

    Example::

        comm = collectives.init()
        grads = comm.allreduce(grads, op="avg", algorithm="ring")
    """

    def __init__(self, transport, topology: Topology, settings: Settings, *,
                 device_transport=None):
        self._transport = transport
        self._device_transport = device_transport  # moves CuPy buffers (nccl, staged MPI)
        self.topology = topology
        self.settings = settings
        self._seq = 0
        self._buffers: dict[tuple[str, str, np.dtype], object] = {}
        self._agreement = Agreement(transport, check=settings.check)
        self._progress = ProgressEngine(f"collectives-progress-{transport.rank}")
        self._stats = StatsRecorder()
        self._feedback = ErrorFeedback()
        self._agree_buf = np.empty(1, np.float64)
        self._tuner = tuner.Tuner.agreed(transport, topology, debug=settings.debug)

    @property
    def rank(self) -> int:
        return self._transport.rank

    @property
    def size(self) -> int:
        return self._transport.size

    def allreduce(self, x, op: str | Op = "sum", algorithm: str | None = None,
                  compression: str | None = None, out=None, *, check_finite: bool = False,
                  error_feedback: bool | str = False):
        """Reduce `x` over all ranks; every rank gets the result, bit-identical.

        `algorithm` defaults to COLLECTIVES_ALGORITHM or "auto". The result has x's shape and
        dtype; x is left untouched unless `out is x`. Before data moves the ranks check that
        they agree on the arguments (MismatchError otherwise); `check_finite=True` also
        raises NonFiniteError on every rank when some rank's x holds NaN or Inf.
        `compression="fp16"|"bf16"` puts 16-bit values on the wire (float32 accumulation,
        overflow-safe scaling; docs/compression.md); `error_feedback=True` (or a name for
        the residual) carries each call's rounding into the next call with the same layout.
        Runs after every async collective issued before it (docs/fusion-and-async.md).
        """
        return self._progress.run(self._call(
            "allreduce", x, out, op, algorithm, compression, None, check_finite, error_feedback))

    def allreduce_async(self, x, op: str | Op = "sum", algorithm: str | None = None,
                        compression: str | None = None, out=None, *, check_finite: bool = False,
                        error_feedback: bool | str = False) -> Handle:
        """`allreduce` on the progress thread: returns a Handle at once; `h.wait()` is the result.

        Leave x (and out) alone until the handle is done. Every rank must issue its
        collectives, sync and async, in the same order.

        Example::

            h = comm.allreduce_async(grad, op="avg")
            other_work()
            grad = h.wait()
        """
        return self._progress.submit(self._call(
            "allreduce", x, out, op, algorithm, compression, None, check_finite, error_feedback),
            "allreduce_async")

    def allreduce_many(self, arrays, op: str | Op = "avg", algorithm: str | None = None,
                       compression: str | None = None, fusion_bytes: int | None = None, *,
                       out=None, check_finite: bool = False,
                       error_feedback: bool | str = False) -> list:
        """Reduce every array of a list, fused: one all-reduce per fusion buffer.

        Arrays are grouped by dtype and packed into buffers of at most `fusion_bytes`
        (default COLLECTIVES_FUSION_BYTES or 64 MiB); results have each array's shape and
        dtype (new arrays, or the arrays of the `out` list, which may be `arrays` itself).

        Example::

            grads = comm.allreduce_many([p.grad for p in params], op="avg")
        """
        return self._progress.run(self._call(
            "allreduce_many", arrays, out, op, algorithm, compression, fusion_bytes,
            check_finite, error_feedback))

    def allreduce_many_async(self, arrays, op: str | Op = "avg", algorithm: str | None = None,
                             compression: str | None = None, fusion_bytes: int | None = None, *,
                             out=None, check_finite: bool = False,
                             error_feedback: bool | str = False) -> Handle:
        """`allreduce_many` on the progress thread: a Handle whose `wait()` gives the list."""
        return self._progress.submit(self._call(
            "allreduce_many", arrays, out, op, algorithm, compression, fusion_bytes,
            check_finite, error_feedback), "allreduce_many_async")

    def stats(self) -> Stats:
        """Calls, time and wire bytes per algorithm since the last reset (docs: stats).

        Example::

            comm.allreduce(x, algorithm="ring", compression="fp16")
            comm.stats()["ring+fp16"].bytes_sent
        """
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def _call(self, name: str, x, out, op, algorithm, compression, fusion_bytes, check_finite,
              error_feedback):
        """The collective as a function of no arguments, for the progress engine to run."""
        single = name == "allreduce"

        def run():
            deadline = time.monotonic() + self.settings.timeout
            tag = self._next_tag()
            with self._agreement.collective(name, self._seq, deadline) as call:
                request = fusion.request(
                    [x] if single else x, out=None if out is None else [out] if single else out,
                    op=op, algorithm=self.settings.algorithm if algorithm is None else algorithm,
                    compression=compression, single=single, error_feedback=error_feedback,
                    fusion_bytes=self.settings.fusion_bytes if fusion_bytes is None else fusion_bytes)
                call.agree(x, op=request.op, algorithm=request.algorithm,
                           compression=compression, fusion_bytes=request.fusion_bytes,
                           check_finite=check_finite)
                results = fusion.run(request, self._backend(tag, call.deadline))
            return results[0] if single else results

        return run

    def _backend(self, tag: int, deadline: float) -> fusion.Backend:
        return fusion.Backend(
            size=self.size, buffer=self._buffer, resolve=self._resolve,
            reduce=functools.partial(self._reduce_flat, tag=tag, deadline=deadline),
            agree_max=functools.partial(self._agree_max, deadline=deadline),
            feedback=self._feedback)

    def _resolve(self, algorithm: str, nbytes: int) -> str:
        if algorithm != "auto":
            return algorithm
        if nbytes == 0:
            return "native"  # nothing to move: the cheapest call, no pricing needed
        name = self._tuner.choose(nbytes)
        if self.settings.debug:
            log.debug("rank %d: auto chose %s for %d bytes", self.rank, name, nbytes)
        return name

    def _reduce_flat(self, work, op: str, name: str, codec: HalfCodec | None, src, *,
                     tag: int, deadline: float) -> None:
        """All-reduce the flat `work` in place (`op`: sum, max, min); `src`: read x there."""
        xp = kernels.array_module(work)
        transport = self._transport_for(xp)
        wire = work.dtype if codec is None else codec.dtype
        label = name if codec is None else f"{name}+{codec.name}"
        start = time.perf_counter()
        if name == "native":
            if codec is None:
                transport.native_allreduce(work if src is None else src, work, op, deadline)
            else:
                payload = codec.encode(work, self._buffer("wire", work, wire, work.size))
                transport.native_allreduce(payload, payload, op, deadline)
                codec.decode_copy(work, payload)
            moved = native_traffic(work.size * wire.itemsize, self.size)
            self._stats.record(label, time.perf_counter() - start, moved, moved, modelled=True)
            return
        codec = codec or IDENTITY
        plan = plan_for(name, self.rank, self.size, work.size, wire.itemsize, self.topology)
        scratch_len, staging_len = buffer_sizes(plan, codec)
        scratch = self._buffer("scratch", work, wire, scratch_len)
        staging = self._buffer("staging", work, wire, staging_len) if codec.staged else None
        shared = self._shared_work(work, deadline)
        if shared is None:
            run_plan(plan, work, scratch, transport, op, tag, deadline, codec, staging, src=src)
        else:  # on-node peers read our data from the transport's shared buffer
            run_plan(plan, shared, scratch, self._transport, op, tag, deadline, codec, staging,
                     src=work if src is None else src, out=work, shared=True)
        sent, received = plan_traffic(plan)
        self._stats.record(label, time.perf_counter() - start, sent * wire.itemsize,
                           received * wire.itemsize)

    def _agree_max(self, value: float, *, deadline: float) -> float:
        """max of `value` over ranks: one all-reduce of one float (compression's scale)."""
        if self.size == 1:
            return value
        start = time.perf_counter()
        self._agree_buf[0] = value
        self._transport.native_allreduce(self._agree_buf, self._agree_buf, "max", deadline)
        moved = native_traffic(self._agree_buf.nbytes, self.size)
        self._stats.record("scale-agreement", time.perf_counter() - start, moved, moved,
                           modelled=True)
        return float(self._agree_buf[0])

    def abort(self, errorcode: int = 1) -> None:
        """End every rank of the job now (MPI_Abort): the way out after a CollectiveTimeout.

        This process ends within COLLECTIVES_ABORT_GRACE seconds (default 5) even when
        MPI_Abort cannot reach the launcher (collectives.failure.end_job).

        Example::

            try:
                y = comm.allreduce(x)
            except collectives.CollectiveTimeout:
                comm.abort(3)
        """
        from .failure import end_job

        end_job(self._transport, errorcode)

    def _transport_for(self, xp):
        """The transport that moves xp's arrays: the device transport for CuPy, if any."""
        if xp is np or self._device_transport is None:
            return self._transport
        return self._device_transport

    def _shared_work(self, x, deadline: float):
        """The transport's work buffer that on-node peers read in place (shm), or None.

        Every rank of a node asks at every plan-run collective: a growing window is collective.
        """
        work_buffer = getattr(self._transport, "work_buffer", None)
        if work_buffer is None or kernels.array_module(x) is not np:
            return None
        return work_buffer(x.size, x.dtype, deadline=deadline)

    def _next_tag(self) -> int:
        self._seq += 1
        return self._seq % TAG_LIMIT

    def _buffer(self, purpose: str, like, dtype, elements: int):
        """A reusable flat buffer for `purpose` on like's array module; grows, never shrinks."""
        xp = kernels.array_module(like)
        key = (purpose, xp.__name__, np.dtype(dtype))
        buf = self._buffers.get(key)
        if buf is None or buf.size < elements:
            buf = self._buffers[key] = xp.empty(elements, dtype)
        return buf[:elements]

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, transport={self._transport.name})"

