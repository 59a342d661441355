"""The Communicator: validated all-reduce over a transport, with plans run by the executor."""
from __future__ import annotations

import logging
import time

import numpy as np

import kernels

from . import tuner
from .agreement import Agreement
from .algorithms import plan_for
from .algorithms.executor import IDENTITY, buffer_sizes, run_plan
from .config import Settings
from .options import Op, check_algorithm
from .topology import Topology
from .validation import check_array, check_out

__all__ = ["Communicator"]

log = logging.getLogger("collectives")

TAG_LIMIT = 32768  # MPI guarantees tags up to 32767


class Communicator:
    """All-reduce among the ranks of one transport.

    Example::

        comm = collectives.init()
        grads = comm.allreduce(grads, op="avg", algorithm="ring")
    """

    def __init__(self, transport, topology: Topology, settings: Settings):
        self._transport = transport
        self.topology = topology
        self.settings = settings
        self._seq = 0
        self._scratch: dict[tuple[str, np.dtype], object] = {}
        self._agreement = Agreement(transport, check=settings.check)

    @property
    def rank(self) -> int:
        return self._transport.rank

    @property
    def size(self) -> int:
        return self._transport.size

    def allreduce(self, x, op: str | Op = "sum", algorithm: str | None = None,
                  compression: str | None = None, out=None, *, check_finite: bool = False):
        """Reduce `x` over all ranks; every rank gets the result, bit-identical.

        `algorithm` defaults to COLLECTIVES_ALGORITHM or "auto". The result has x's shape and
        dtype; x is left untouched unless `out is x`. Before data moves the ranks check that
        they agree on the arguments (MismatchError otherwise); `check_finite=True` also
        raises NonFiniteError on every rank when some rank's x holds NaN or Inf.
        """
        deadline = time.monotonic() + self.settings.timeout
        tag = self._next_tag()
        with self._agreement.collective("allreduce", self._seq, deadline) as call:
            return self._allreduce(call, tag, x, op, algorithm, compression, out, check_finite)

    def _allreduce(self, call, tag, x, op, algorithm, compression, out, check_finite):
        op = Op.parse(op)
        name = check_algorithm(self.settings.algorithm if algorithm is None else algorithm)
        check_array(x)
        if out is not None:
            check_out(out, x)
        if compression is not None:
            raise ValueError(f"compression {compression!r} is not available yet; pass None")
        xp = kernels.array_module(x)
        result = xp.empty(x.shape, x.dtype) if out is None else out
        work = result.reshape(-1) if result.flags.c_contiguous else xp.empty(x.size, x.dtype)
        if name == "auto":
            name = tuner.choose(x.nbytes, self.size)
            if self.settings.debug:
                log.debug("rank %d: auto chose %s for %d bytes", self.rank, name, x.nbytes)
        call.agree(x, op=op, algorithm=name, compression=compression, check_finite=check_finite)
        deadline = call.deadline
        if name == "native":
            self._native(x, work, op, deadline)
        else:
            # x is read where it lies when it is flat; otherwise work starts as its copy.
            in_place = xp.shares_memory(work, x)
            src = x.reshape(-1) if x.flags.c_contiguous and not in_place else None
            if src is None and not in_place:
                xp.copyto(work.reshape(x.shape), x)
            plan = plan_for(name, self.rank, self.size, x.size, x.dtype.itemsize, self.topology)
            scratch_len, _ = buffer_sizes(plan, IDENTITY)
            scratch = self._scratch_for(work, x.dtype, scratch_len)
            shared = self._shared_work(x, deadline)
            if shared is None:
                run_plan(plan, work, scratch, self._transport, op.elementwise, tag, deadline, src=src)
            else:  # on-node peers read our data from the transport's shared buffer
                run_plan(plan, shared, scratch, self._transport, op.elementwise, tag, deadline,
                         src=work if src is None else src, out=work)
        if op is Op.AVG:
            kernels.divide_into(work, self.size)
        if not xp.shares_memory(work, result):
            xp.copyto(result, work.reshape(result.shape))
        return result

    def abort(self, errorcode: int = 1) -> None:
        """End every rank of the job now (MPI_Abort): the way out after a CollectiveTimeout.

        Example::

            try:
                y = comm.allreduce(x)
            except collectives.CollectiveTimeout:
                comm.abort(3)
        """
        self._transport.abort(errorcode)

    def _native(self, x, work, op: Op, deadline: float) -> None:
        xp = kernels.array_module(x)
        if x.flags.c_contiguous and not xp.shares_memory(x, work):
            src = x.reshape(-1)
        else:
            xp.copyto(work.reshape(x.shape), x)
            src = work
        self._transport.native_allreduce(src, work, op.elementwise, deadline)

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

    def _scratch_for(self, like, dtype, elements: int):
        """A reusable buffer of `elements` on like's array module; grows, never shrinks."""
        xp = kernels.array_module(like)
        key = (xp.__name__, np.dtype(dtype))
        buf = self._scratch.get(key)
        if buf is None or buf.size < elements:
            buf = self._scratch[key] = xp.empty(elements, dtype)
        return buf[:elements]

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, transport={self._transport.name})"

