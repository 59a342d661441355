"""The Communicator: the public collectives, issued in order, checked, bounded, failing loudly.

Collectives: allreduce and allreduce_many (fused), reduce_scatter, allgather, broadcast,
reduce, alltoall, barrier; each has an _async twin returning a Handle.

Each method builds a `Call` (collectives.calls) and issues it through the progress engine:
sync calls run on the caller's thread, async ones on the progress thread, all in issue
order. Running a call is the same for every collective: the agreement check (which may
carry a small call's data), then the data movement, then a last look for peers that gave
up. A timeout or a failure while data moves breaks the communicator and tells the other
ranks (collectives.agreement); `abort()` ends the job.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import weakref
from collections.abc import Iterator

import numpy as np

from .agreement import Agreement
from .calls import Call, Context
from .calls.allgather import allgather_call
from .calls.allreduce import allreduce_call, allreduce_many_call
from .calls.alltoall import alltoall_call
from .calls.barrier import Barrier
from .calls.base import Refused, execute, issuer
from .calls.broadcast import broadcast_call
from .calls.reduce import reduce_call
from .calls.reduce_scatter import reduce_scatter_call
from .calls.small import GENERAL, SmallLane
from .config import Settings
from .execution import PlanRunner
from .failure import end_job
from .errors import CollectiveError
from .options import Op
from .p2p import Message, check_peer, check_tag
from .progress import Handle, ProgressEngine
from .reduction import FlatReducer
from .stats import Stats
from .topology import Topology
from .tuner import Tuner

__all__ = ["Communicator"]


class Communicator:
    """Collectives among the ranks of one transport.

    Example::

        with collectives.init() as comm:
            grads = comm.allreduce(grads, op="avg", algorithm="ring")
    """

    def __init__(self, transport, topology: Topology, settings: Settings, *,
                 device_transport=None, tuner: Tuner | None = None):
        self._transport = transport
        self.topology = topology
        self.settings = settings
        agreement = Agreement(transport, check=settings.check)
        tuner = tuner or Tuner.agreed(transport, topology, debug=settings.debug)
        reducer = FlatReducer(transport, device_transport, topology, tuner,
                              debug=settings.debug)
        self._ctx = Context(transport, agreement, reducer, settings, topology)
        self._progress = ProgressEngine()
        self._lane = SmallLane(self._ctx, self._progress)
        self._timeout = settings.timeout
        self._closed = False
        self._pid = os.getpid()
        _LIVE.add(self)  # (refused in a forked child)
        # runs before the transport closes at exit (handlers run last-registered first):
        # an exit handler registered before init then finds the communicator closed
        self._at_exit = functools.partial(_closed_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    @property
    def rank(self) -> int:
        return self._transport.rank

    @property
    def size(self) -> int:
        return self._transport.size

    @property
    def transport_name(self) -> str:
        """What moves host arrays: "mpi", "mpi+shm" (shared windows on a node) or "torch"."""
        return self._transport.name

    @property
    def device_transport_name(self) -> str | None:
        """What moves CuPy arrays: "mpi" (CUDA-aware or staged), "nccl", or None."""
        device = self._ctx.reducer.device_runner
        return None if device is None else device.transport.name

    @property
    def runner(self) -> PlanRunner:
        """The executor over this communicator's host transport: runs any plan (tools such
        as calibration time plans with it, outside any collective)."""
        return self._ctx.reducer.host_runner

    @property
    def tuner(self) -> Tuner:
        """What `algorithm="auto"` asks: `comm.tuner.choose(nbytes)`, `comm.tuner.predict(nbytes)`."""
        return self._ctx.reducer.tuner

    # ------------------------------------------------------------------ all-reduce

    def allreduce(self, x, op: str | Op = "sum", algorithm: str | None = None,
                  compression: str | None = None, out=None, *, check_finite: bool = False,
                  error_feedback: bool | str = False, deterministic: bool | None = None):
        """Reduce `x` over all ranks; every rank gets the result, bit-identical.

        `algorithm` defaults to COLLECTIVES_ALGORITHM or "auto". The result has x's shape and
        dtype; x is left untouched unless `out is x`. Before data moves the ranks check that
        they agree on the arguments (MismatchError otherwise); `check_finite=True` also
        raises NonFiniteError on every rank when some rank's x holds NaN or Inf.
        `compression="fp16"|"bf16"` puts 16-bit values on the wire (float32 accumulation,
        overflow-safe scaling; docs/compression.md); `error_feedback=True` (or a name for
        the residual) carries each call's rounding into the next call with the same layout.
        `deterministic=True` (default COLLECTIVES_DETERMINISTIC) gives the bits of
        `collectives.reference_reduce` whatever the algorithm, layout or fusion
        (docs/reproducible.md). Runs after every async collective issued before it.
        """
        if (type(x) is np.ndarray and compression is None and check_finite is False
                and error_feedback is False and not self._closed
                and (deterministic is None or deterministic is True or deterministic is False)):
            # (exactly: 1, 1.0 or np.True_ hash like True and would share the lane's route)
            result = self._lane.allreduce(x, out, op, algorithm, deterministic)
            if result is not None:
                return result
        return self._run(allreduce_call(self.settings, x, out, op, algorithm, compression,
                                        check_finite, error_feedback, deterministic, "sync"))

    def allreduce_async(self, x, op: str | Op = "sum", algorithm: str | None = None,
                        compression: str | None = None, out=None, *, check_finite: bool = False,
                        error_feedback: bool | str = False,
                        deterministic: bool | None = None) -> Handle:
        """`allreduce` on the progress thread: returns a Handle at once; `h.wait()` is the result.

        Leave x (and out) alone until the handle is done. Every rank must issue its
        collectives, sync and async, in the same order and from same-named threads.

        Example::

            h = comm.allreduce_async(grad, op="avg")
            other_work()
            grad = h.wait()
        """
        return self._submit(allreduce_call(self.settings, x, out, op, algorithm, compression,
                                           check_finite, error_feedback, deterministic,
                                           "async"))

    def allreduce_many(self, arrays, op: str | Op = "avg", algorithm: str | None = None,
                       compression: str | None = None, fusion_bytes: int | None = None, *,
                       out=None, check_finite: bool = False,
                       error_feedback: bool | str = False,
                       deterministic: bool | None = None) -> list:
        """Reduce every array of a list, fused: one all-reduce per fusion buffer.

        Arrays are grouped by dtype and packed into buffers of at most `fusion_bytes`
        (default COLLECTIVES_FUSION_BYTES or 64 MiB); results have each array's shape and
        dtype (new arrays, or the arrays of the `out` list, which may be `arrays` itself).

        Example::

            grads = comm.allreduce_many([p.grad for p in params], op="avg")
        """
        return self._run(allreduce_many_call(
            self.settings, arrays, out, op=op, algorithm=algorithm, compression=compression,
            fusion_bytes=fusion_bytes, check_finite=check_finite,
            error_feedback=error_feedback, deterministic=deterministic, mode="sync"))

    def allreduce_many_async(self, arrays, op: str | Op = "avg", algorithm: str | None = None,
                             compression: str | None = None, fusion_bytes: int | None = None, *,
                             out=None, check_finite: bool = False,
                             error_feedback: bool | str = False,
                             deterministic: bool | None = None) -> Handle:
        """`allreduce_many` on the progress thread: a Handle whose `wait()` gives the list."""
        return self._submit(allreduce_many_call(
            self.settings, arrays, out, op=op, algorithm=algorithm, compression=compression,
            fusion_bytes=fusion_bytes, check_finite=check_finite,
            error_feedback=error_feedback, deterministic=deterministic, mode="async"))

    # ------------------------------------------------------------------ the other collectives

    def reduce_scatter(self, x, op: str | Op = "sum", algorithm: str | None = None,
                       compression: str | None = None, out=None, *,
                       deterministic: bool | None = None):
        """This rank's block of the reduction of every rank's x, flattened:
        `np.array_split(reduced.ravel(), size)[rank]` (blocks differ by one element at most,
        larger first). `algorithm` None: "auto"; see docs/collectives.md.

        Example::

            shard = comm.reduce_scatter(grad, op="avg")      # FSDP: the gradient shard
        """
        return self._sync(("reduce_scatter", op, algorithm, compression, deterministic), x, out,
                          lambda: self._reduce_scatter(x, out, op, algorithm, compression,
                                                       deterministic, "sync"))

    def reduce_scatter_async(self, x, op: str | Op = "sum", algorithm: str | None = None,
                             compression: str | None = None, out=None, *,
                             deterministic: bool | None = None) -> Handle:
        """`reduce_scatter` on the progress thread: a Handle whose `wait()` is the block."""
        return self._submit(self._reduce_scatter(x, out, op, algorithm, compression,
                                                 deterministic, "async"))

    def allgather(self, x, algorithm: str | None = None, out=None, *,
                  compression: str | None = None):
        """Every rank's x stacked in rank order: shape (size, *x.shape). Every rank passes
        the same shape and dtype. `compression` puts 16-bit values on the wire.

        Example::

            params = comm.allgather(shard)            # params[r] is rank r's shard
        """
        return self._sync(("allgather", algorithm, compression), x, out,
                          lambda: self._allgather(x, out, algorithm, compression, "sync"))

    def allgather_async(self, x, algorithm: str | None = None, out=None, *,
                        compression: str | None = None) -> Handle:
        """`allgather` on the progress thread."""
        return self._submit(self._allgather(x, out, algorithm, compression, "async"))

    def broadcast(self, x, root: int = 0, algorithm: str | None = None, out=None, *,
                  label: str | None = None):
        """Root's x on every rank (elsewhere x gives the shape and dtype and is not written
        unless `out is x`). `label`: printable text, a layer's words for what x stands for,
        compared as part of the call by the agreement check (ranks whose labels differ get
        MismatchError naming them; with the check off nothing compares it): e.g. torch's
        broadcast of tensors that travel as padded words says their bytes and dtype.

        Example::

            weights = comm.broadcast(weights, root=0, out=weights)
        """
        return self._sync(("broadcast", root, algorithm, label), x, out,
                          lambda: self._broadcast(x, out, root, algorithm, "sync", label))

    def broadcast_async(self, x, root: int = 0, algorithm: str | None = None,
                        out=None, *, label: str | None = None) -> Handle:
        """`broadcast` on the progress thread."""
        return self._submit(self._broadcast(x, out, root, algorithm, "async", label))

    def reduce(self, x, root: int = 0, op: str | Op = "sum", algorithm: str | None = None,
               compression: str | None = None, out=None, *, deterministic: bool | None = None):
        """The reduction of every rank's x on `root`; None on the other ranks.

        Example::

            total = comm.reduce(np.asarray(loss), root=0)  # a 0-d array: scalars are refused
        """
        return self._sync(("reduce", root, op, algorithm, compression, deterministic), x, out,
                          lambda: self._reduce(x, out, root, op, algorithm, compression,
                                               deterministic, "sync"))

    def reduce_async(self, x, root: int = 0, op: str | Op = "sum",
                     algorithm: str | None = None, compression: str | None = None,
                     out=None, *, deterministic: bool | None = None) -> Handle:
        """`reduce` on the progress thread."""
        return self._submit(self._reduce(x, out, root, op, algorithm, compression,
                                         deterministic, "async"))

    def alltoall(self, x, out=None, *, algorithm: str | None = None):
        """x has shape (size, ...): row r goes to rank r; row r of the result came from rank
        r (its row `rank`).

        Example::

            received = comm.alltoall(by_destination)
        """
        return self._sync(("alltoall", algorithm), x, out,
                          lambda: self._alltoall(x, out, algorithm, "sync"))

    def alltoall_async(self, x, out=None, *, algorithm: str | None = None) -> Handle:
        """`alltoall` on the progress thread."""
        return self._submit(self._alltoall(x, out, algorithm, "async"))

    def barrier(self) -> None:
        """Return once every rank has called barrier (bounded by the timeout)."""
        self._run(Barrier(issuer("sync")))

    def barrier_async(self) -> Handle:
        """`barrier` on the progress thread: `h.wait()` returns once every rank called it."""
        return self._submit(Barrier(issuer("async")))

    def _reduce_scatter(self, x, out, op, algorithm, compression, deterministic, mode):
        return reduce_scatter_call(self.size, self.rank, x, out, op=op, algorithm=algorithm,
                                   compression=compression,
                                   deterministic=self._deterministic(deterministic),
                                   issued=issuer(mode))

    def _allgather(self, x, out, algorithm, compression, mode):
        return allgather_call(self.size, x, out, algorithm=algorithm, compression=compression,
                              issued=issuer(mode))

    def _broadcast(self, x, out, root, algorithm, mode, label):
        issued = issuer(mode)
        if label is not None and not isinstance(label, str):  # refused as the call (a list
            # raised, unhashable, before the refusal: the ranks fell out of step; 96th review)
            return Refused("broadcast", issued, TypeError(
                f"label must be a str or None, got {type(label).__name__}"))
        if label is not None and not label.isprintable():  # (a control character made the
            # mismatch name another field, or none: the signature's separators; 97th review)
            return Refused("broadcast", issued, ValueError(
                f"label must be printable text, got {label[:80]!r}"))
        return broadcast_call(self.size, self.rank, x, out, root=root, algorithm=algorithm,
                              issued=issued if label is None else (*issued, label))

    def _reduce(self, x, out, root, op, algorithm, compression, deterministic, mode):
        return reduce_call(self.size, self.rank, x, out, root=root, op=op, algorithm=algorithm,
                           compression=compression,
                           deterministic=self._deterministic(deterministic),
                           issued=issuer(mode))

    def _deterministic(self, deterministic: bool | None) -> bool:
        return self.settings.deterministic if deterministic is None else deterministic

    def _alltoall(self, x, out, algorithm, mode):
        return alltoall_call(self.size, self.rank, x, out, algorithm=algorithm,
                             issued=issuer(mode))

    # ------------------------------------------------------------------ point to point

    def isend(self, x, dst: int, tag: int = 0) -> Message:
        """Send x (contiguous) to rank `dst`; returns a Message (`test()`, `wait()`).

        Point to point runs beside the collectives (its own channel, no issue order, no
        agreement check); waits are bounded by the timeout. Leave x alone until done.
        """
        self._check_open("isend")
        return Message(self._transport, x, check_peer(dst, self.size, "dst"), check_tag(tag),
                       send=True, timeout=self._timeout)

    def irecv(self, out, src: int, tag: int = 0) -> Message:
        """Receive into `out` (contiguous, exactly the message's size) from rank `src`."""
        self._check_open("irecv")
        return Message(self._transport, out, check_peer(src, self.size, "src"), check_tag(tag),
                       send=False, timeout=self._timeout)

    def send(self, x, dst: int, tag: int = 0) -> None:
        """`isend(...).wait()`.

        Example::

            comm.send(activations, dst=comm.rank + 1)
        """
        self.isend(x, dst, tag).wait()

    def recv(self, out, src: int, tag: int = 0):
        """`irecv(...).wait()`: returns out."""
        return self.irecv(out, src, tag).wait()

    # ------------------------------------------------------------------ the rest

    def stats(self) -> Stats:
        """Calls, time and wire bytes per algorithm since the last reset (docs: stats).

        Example::

            comm.allreduce(x, algorithm="ring", compression="fp16")
            comm.stats()["ring+fp16"].bytes_sent
        """
        return self._ctx.reducer.stats.snapshot()

    def reset_stats(self) -> None:
        self._ctx.reducer.stats.reset()

    def clear_error_feedback(self) -> None:
        """Forget every error-feedback residual (they are also bounded: compression.feedback)."""
        self._ctx.reducer.feedback.clear()

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
        end_job(self._transport, errorcode, grace=self.settings.abort_grace)

    def close(self) -> None:
        """Finish the queued collectives (and one running on another thread) and close the
        transport (the other ranks learn that this one left if they do not close too).
        Collective; safe to call twice; the transport closes at exit anyway."""
        if self._closed:
            return
        atexit.unregister(self._at_exit)
        finished = self._progress.close(self.settings.timeout, then=self._leave)
        self._closed = True
        if not finished:  # the transport closes at exit, once nothing uses it
            raise CollectiveError(f"close: queued or running collectives still ran after "
                                  f"{self.settings.timeout:g} s; the transport stays open")

    def _leave(self) -> None:
        """Refuse every later call, then close the transport (no collective runs)."""
        self._closed = True
        self._transport.close()

    def __copy__(self) -> "Communicator":
        """The communicator itself: a handle of the job's ranks, not a value (a copy escaped
        the refusal in a forked child, the eighty-seventh review; a deep copy of a model
        holding one failed in mpi4py's pickling)."""
        return self

    def __deepcopy__(self, memo: dict) -> "Communicator":
        return self

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ issuing

    def _sync(self, arguments: tuple, x, out, build):
        """A sync collective besides all-reduce: through the small-call lane when it takes
        it (a repeated call), else `build()` on the general path."""
        if not self._closed:
            result = self._lane.collective(arguments, x, out, build)
            if result is not GENERAL:
                return result
        return self._run(build())

    def _run(self, call: Call):
        # (also in _execute, as it may close meanwhile; here first: a forked child waited
        # for the parent's queue)
        self._check_open(call.name)
        return self._progress.run(lambda: self._execute(call), call.name)

    def _submit(self, call: Call) -> Handle:
        self._check_open(f"{call.name}_async")
        return self._progress.submit(lambda: self._execute(call), f"{call.name}_async")

    def refuse(self, collective: str, error: Exception) -> None:
        """Take part in `collective` by refusing it: raise `error` here, MismatchError ("rank
        1 rejected its arguments (...)") on the ranks that make the call. For a layer above
        that checks its own arguments (e.g. converts a framework's tensors) before the call:
        its peers then never wait out the timeout.

        Example::

            try:
                views = [as_array(t) for t in tensors]
            except TypeError as error:
                comm.refuse("allreduce_many", error)
        """
        self._run(Refused(collective, issuer("sync"), error))

    def refuse_async(self, collective: str, error: Exception) -> Handle:
        """`refuse` as an async call, in the progress thread's order: its Handle's `wait()`
        raises `error`. For a layer that issues several async calls and must issue every one
        of them where one's arguments fail (GradSync's buckets): its peers then stay in step."""
        return self._submit(Refused(collective, issuer("async"), error))

    @contextlib.contextmanager
    def refusing(self, collective: str) -> Iterator[None]:
        """`refuse(collective, error)` for a TypeError, ValueError or BufferError (no DLPack
        export) that the checks inside raise: the error here, MismatchError on the peers.

        Example::

            with comm.refusing("allreduce_many"):
                views = [as_array(t) for t in tensors]
        """
        try:
            yield
        except (TypeError, ValueError, BufferError) as error:
            self.refuse(collective, error)

    def _check_open(self, what: str) -> None:
        if self._closed and os.getpid() != self._pid:
            raise CollectiveError(f"{what}: this communicator belongs to process {self._pid}; "
                                  "a process forked from it cannot take part in its "
                                  "collectives (init() one in the child's own job)")
        if self._closed:
            raise CollectiveError(f"{what}: this communicator is closed")

    def _execute(self, call: Call):
        self._check_open(call.name)
        return execute(self._ctx, call)

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, transport={self._transport.name})"


_LIVE: "weakref.WeakSet[Communicator]" = weakref.WeakSet()


def _refuse_in_forked_child() -> None:
    """A forked child's calls are refused: as the rank, its collectives paired with the
    peers' next ones, and the rank itself was then out of step (the eighty-third review)."""
    for comm in list(_LIVE):
        comm._closed = True


os.register_at_fork(after_in_child=_refuse_in_forked_child)


def _closed_at_exit(ref: "weakref.ref[Communicator]") -> None:
    """The program ends: calls from exit handlers that run after this one (those registered
    before init) are refused, as after close()."""
    comm = ref()
    if comm is not None:
        comm._closed = True
