"""PyTorch glue: a DDP communication hook, an optimizer wrapper, and DDP's process group.

`allreduce_hook` replaces DDP's all-reduce with ours (any algorithm, fp16/bf16 on the wire);
`DistributedOptimizer` gives data parallelism without DDP (GradSync hooks overlap the
all-reduces with backward); `init_process_group` starts torch.distributed (gloo, or our
backend "collectives") when the job was launched by mpiexec or srun rather than torchrun.
Importing this module registers the torch.distributed backend "collectives"
(`collectives.hooks.torch_backend`).

Example::

    comm = collectives.init()
    collectives.hooks.torch.init_process_group(comm)
    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(HookState(comm, algorithm="ring"), allreduce_hook)
"""
# No `from __future__ import annotations`: DDP checks the hook's annotations as objects.
import datetime
import os
import socket
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from ..communicator import Communicator
from ..gradsync import (GradSync, as_array, broadcast_parameters, check_communicator,
                        check_options, instance_name)
from ..progress import Handle
from . import torch_backend  # noqa: F401  registers backend "collectives"
from .torch_work import raise_or_value

__all__ = ["HookState", "allreduce_hook", "DistributedOptimizer", "init_process_group"]


class HookState:
    """What `allreduce_hook` needs: the communicator and the all-reduce's options.

    `error_feedback=True` (with a compression) carries each bucket's rounding error into
    its next step. A bucket's residual belongs to its parameters: when DDP rebuilds its
    buckets (after the first step), a bucket index holding other parameters starts afresh.

    Example::

        ddp.register_comm_hook(HookState(comm, compression="fp16"), allreduce_hook)
    """

    __slots__ = ("comm", "algorithm", "compression", "error_feedback", "name", "_buckets")

    def __init__(self, comm: Communicator, algorithm: str | None = None,
                 compression: str | None = None, error_feedback: bool = False):
        options = check_options(comm, algorithm, compression, error_feedback)
        self.comm = comm
        self.algorithm = options.algorithm
        self.compression = compression
        self.error_feedback = error_feedback
        self.name = instance_name(comm, "ddp")  # its buckets' residuals, apart from others'
        self._buckets: dict[int, tuple[tuple, int]] = {}  # index -> (its parameters, layout #)

    def residual_name(self, bucket: dist.GradBucket) -> str:
        """The name of `bucket`'s residual: its index and which of the parameter sets that
        index held (counted alike on every rank: DDP rebuilds every rank's buckets alike)."""
        index = bucket.index()
        params = tuple(map(id, bucket.parameters()))
        held, layout = self._buckets.get(index, (None, -1))
        if params != held:
            layout += 1
            self._buckets[index] = (params, layout)
        return f"{self.name}-bucket-{index}.{layout}"


def allreduce_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average a DDP gradient bucket over the ranks with our all-reduce, as DDP's default does.

    1. View the bucket's flat buffer as an array (DLPack, no copy).
    2. Start an async all-reduce (op "avg") of it in place on the progress thread; with a
       compression the library scales before the 16-bit cast, so the sum cannot overflow
       (deterministic and compressed: each gradient with its own scale, so its bits do not
       depend on DDP's buckets; docs/reproducible.md).
    3. Return a Future that the all-reduce completes, so backward goes on meanwhile.

    Example::

        ddp.register_comm_hook(HookState(comm), allreduce_hook)
    """
    tensor = bucket.buffer()
    view = as_array(tensor)
    comm = state.comm
    if state.compression is not None and comm.settings.deterministic:
        parts = _gradient_views(view, bucket)  # each its own scale, as allreduce_many's:
        handle = comm.allreduce_many_async(  # bits independent of DDP's buckets (a 1e-6
            parts, op="avg", algorithm=state.algorithm,  # gradient beside a 1e4 one came
            compression=state.compression, out=parts,  # 29% off; the eighty-fifth review)
            fusion_bytes=max(view.nbytes, 1))
    else:
        feedback = state.residual_name(bucket) if state.error_feedback else False
        handle = comm.allreduce_async(view, op="avg", algorithm=state.algorithm,
                                      compression=state.compression, out=view,
                                      error_feedback=feedback)
    future: torch.futures.Future[torch.Tensor] = torch.futures.Future()

    def finish(done: Handle) -> None:
        try:
            done.wait()
        except BaseException as error:  # hand any failure to DDP's future
            future.set_exception(error)
        else:
            future.set_result(tensor)

    handle.add_done_callback(finish)
    return future.then(raise_or_value)  # an error DDP's reducer sees as one


def _gradient_views(view, bucket: dist.GradBucket) -> list:
    """`view` (a bucket's flat buffer) cut at its gradients' bounds."""
    ends = np.cumsum([0, *(g.numel() for g in bucket.gradients())])
    parts = [view[a:b] for a, b in zip(ends[:-1], ends[1:])]
    return parts if ends[-1] == view.size else [*parts, view[ends[-1]:]]


class DistributedOptimizer:
    """Data parallelism without DDP: wraps `optimizer`, averaging gradients before `step()`.

    At construction rank 0's parameters and buffers are broadcast, so every replica starts
    equal; then a GradSync attached to `module` all-reduces gradient buckets during
    backward. Options are GradSync's. For an LR scheduler pass it `.optimizer`.

    Example::

        opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, comm)
        loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    """

    __slots__ = ("optimizer", "sync")

    def __init__(self, optimizer: torch.optim.Optimizer, module: torch.nn.Module,
                 comm: Communicator, *, algorithm: str | None = None,
                 compression: str | None = None, fusion_bytes: int | None = None,
                 error_feedback: bool = False):
        check_communicator(comm)
        with comm.refusing("allgather"):  # (the others: broadcast_parameters' all-gather)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(f"optimizer must be a torch.optim.Optimizer, "
                                f"got {type(optimizer).__qualname__}")
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"module must be a torch.nn.Module, "
                                f"got {type(module).__qualname__}")
            check_options(comm, algorithm, compression, error_feedback, fusion_bytes)
        broadcast_parameters(module.state_dict(), comm)  # (a refusal above: raised here)
        self.optimizer = optimizer
        # Made once every rank passed the checks: each rank counts its GradSyncs alike.
        self.sync = GradSync(comm, algorithm=algorithm, compression=compression,
                             fusion_bytes=fusion_bytes, error_feedback=error_feedback)
        self.sync.attach(module)

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Wait for the averaged gradients, then step (a closure's backward is waited for too)."""
        if closure is None:
            self.sync.wait()
            return self.optimizer.step()

        def synced_closure():
            loss = closure()
            self.sync.wait()
            return loss

        return self.optimizer.step(synced_closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)


def init_process_group(comm: Communicator, *, backend: str = "gloo",
                       timeout: float | None = None, pg_options=None) -> None:
    """Start torch.distributed over `comm`'s ranks (for DDP under mpiexec or srun).

    `backend="collectives"` makes our backend the default group (torch's ranks are then
    MPI's, as that backend needs under mpiexec), `pg_options` its BackendOptions. Rank 0 picks a free port (or MASTER_PORT) and every rank learns it through `comm`; the
    address is MASTER_ADDR, by default 127.0.0.1 (one machine). Does nothing if
    torch.distributed is already initialized (torchrun, or collectives.init() under it).

    Example::

        comm = collectives.init()
        init_process_group(comm, backend="collectives")
        ddp = DistributedDataParallel(model)
    """
    if dist.is_initialized():
        return
    port = np.zeros(1, np.int64)
    with comm.refusing("allreduce"):  # (a bad MASTER_PORT: told to the others)
        port[0] = _free_port() if comm.rank == 0 else 0
    comm.allreduce(port, op="max", algorithm="native", out=port)
    limit = datetime.timedelta(seconds=comm.settings.timeout if timeout is None else timeout)
    dist.init_process_group(
        backend, init_method=f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{port[0]}",
        rank=comm.rank, world_size=comm.size, timeout=limit, pg_options=pg_options)


def _free_port() -> int:
    port = os.environ.get("MASTER_PORT")
    if port:
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"MASTER_PORT={port!r} is not a port number (1 to 65535); unset "
                             "it to take a free port")
        return int(port)
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
