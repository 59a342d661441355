"""torch.distributed backend "collectives": every torch parallel API over our collectives.

Importing this module (or `collectives.hooks.torch`) registers the backend; then
`dist.init_process_group(backend="collectives")` is the whole change: DDP, FSDP2
(`fully_shard`), ZeroRedundancyOptimizer and torch.distributed's functions run on our
algorithms. Subgroups (`dist.new_group(ranks, backend="collectives")`) get a communicator over
their own ranks (`torch_groups`). Collectives are issued asynchronously on the communicator's
progress thread in the order torch calls them, and their Works complete from there
(`torch_work`); tensors reach the library without copies (`torch_arrays`).

Options (`pg_options=BackendOptions(...)`, else `COLLECTIVES_ALGORITHM` and
`COLLECTIVES_COMPRESSION`): the algorithm, and 16-bit wire compression of float32/float64
reductions. Ops: ReduceOp SUM, AVG, MAX, MIN (others refused by name).

Example::

    import collectives.hooks.torch_backend  # noqa: F401  registers "collectives"
    dist.init_process_group(backend="collectives")          # under torchrun
    model = DistributedDataParallel(model)                  # or fully_shard(model), ...
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch._C._distributed_c10d import (AllgatherOptions, AllreduceOptions, AllToAllOptions,
                                        BarrierOptions, BroadcastOptions, ReduceOptions,
                                        ReduceScatterOptions)

from ..algorithms import PLANNERS
from ..communicator import Communicator
from ..agreement import differences
from ..errors import CollectiveError, MismatchError, unknown_choice
from ..options import check_compression
from .torch_arrays import (Rows, as_array, byte_view, compressible, dtype_code, dtype_named,
                           flat, reduce_op, tensors_named)
from .torch_groups import group_communicator
from .torch_work import HandleWork, MessageWork

__all__ = ["BACKEND", "BackendOptions", "CollectivesProcessGroup"]

BACKEND = "collectives"
_COLLECTIVES = tuple(PLANNERS)  # allreduce, reduce_scatter, allgather, broadcast, reduce, alltoall
_ALGORITHMS = tuple(dict.fromkeys(("auto", "native", *(a for c in _COLLECTIVES
                                                       for a in PLANNERS[c]))))
_COMPRESSIONS = ("none", "fp16", "bf16")
_OPTION_BYTES = 64  # what ranks compare of a group's options: "<algorithm> <compression>"


def _refusing(collective: str, *, per: int | None = None):
    """A backend op whose own checks (contiguity, sizes, splits, a tensor that cannot be
    viewed) refuse `collective` on every rank: MismatchError on the others at once, where
    they would otherwise pair their call with this rank's next one, out of step for good.
    The checks run before the op issues anything. `per`: the op issues a call per tensor
    of its argument at that position, and each is refused (one refusal for several left
    the others' later calls paired with this rank's next ones; the 116th review)."""
    def wrap(method):
        @functools.wraps(method)
        def op(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (TypeError, ValueError, BufferError) as error:
                calls = 1 if per is None or len(args) <= per else max(len(args[per]), 1)
                self._refuse([collective] * calls, error)
        return op
    return wrap


@dataclass(frozen=True)
class BackendOptions:
    """A "collectives" group's options: `init_process_group(..., pg_options=...)` or
    `new_group(..., pg_options=...)`.

    `algorithm` applies to every collective that has it ("ring" to all-reduce, reduce-scatter,
    all-gather and reduce; "tree" to broadcast and reduce; "auto" and "native" to all), the
    others choose with "auto"; None: COLLECTIVES_ALGORITHM, else "auto". `compression`
    ("fp16", "bf16") puts float32/float64 reductions on the wire as 16-bit values; None:
    COLLECTIVES_COMPRESSION, else none; "none" turns it off whatever the environment says.

    Example::

        dist.init_process_group("collectives", pg_options=BackendOptions(algorithm="ring"))
    """

    algorithm: str | None = None
    compression: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm is not None and self.algorithm not in _ALGORITHMS:
            raise unknown_choice("algorithm", self.algorithm, _ALGORITHMS)
        if self.compression is not None and self.compression not in _COMPRESSIONS:
            raise unknown_choice("compression", self.compression, _COMPRESSIONS)


class CollectivesProcessGroup(dist.ProcessGroup):
    """A torch process group whose collectives are `comm`'s (see the module docstring).

    Example::

        group = dist.new_group([0, 1], backend="collectives")
        dist.all_reduce(tensor, group=group)
    """

    def __init__(self, comm: Communicator, options: BackendOptions):
        super().__init__(comm.rank, comm.size)
        self.comm = comm
        chosen = options.algorithm or comm.settings.algorithm
        self._algorithm = {c: chosen if chosen in ("auto", "native", *PLANNERS[c]) else "auto"
                           for c in _COLLECTIVES}
        with comm.refusing("allgather"):  # (the others are in _agree_on_options)
            compression = (options.compression or os.environ.get("COLLECTIVES_COMPRESSION")
                           or "none")
            if compression not in _COMPRESSIONS:
                raise ValueError(f"COLLECTIVES_COMPRESSION: "
                                 f"{unknown_choice('compression', compression, _COMPRESSIONS)}")
            # (each reduce and reduce-scatter failed later; the 112th review)
            if chosen == "native" and compression != "none":
                raise ValueError(
                    f"the group's algorithm 'native' (BackendOptions or COLLECTIVES_ALGORITHM) "
                    f"with compression {compression!r} (BackendOptions or "
                    f"COLLECTIVES_COMPRESSION): MPI's own reduce and reduce-scatter have no "
                    f"codec; choose a plan algorithm ('auto', 'ring', ...) or compression "
                    f"'none'")
        _agree_on_options(comm, chosen, compression)
        self._compression = check_compression(None if compression == "none" else compression)
        self._group_name = ""

    # ------------------------------------------------------------------ identity

    def getBackendName(self) -> str:
        return BACKEND

    @property
    def group_name(self) -> str:
        """The name torch registered the group under (FSDP2 looks groups up by it)."""
        return self._group_name

    def _set_group_name(self, name: str) -> None:
        self._group_name = name

    def shutdown(self) -> None:
        """destroy_process_group: finish what is queued and close the communicator."""
        self.comm.close()

    # ------------------------------------------------------------------ reductions

    @_refusing("allreduce")
    def allreduce(self, tensors: list[torch.Tensor], opts=AllreduceOptions()) -> dist.Work:
        views = [as_array(t) for t in tensors]
        options = dict(op=reduce_op(opts.reduceOp), algorithm=self._algorithm["allreduce"],
                       compression=self._compress(tensors))
        if len(views) == 1:
            handle = self.comm.allreduce_async(views[0], out=views[0], **options)
        else:
            handle = self.comm.allreduce_many_async(views, out=views, **options)
        return HandleWork([handle], lambda: tensors)

    allreduce_coalesced = allreduce

    @_refusing("reduce", per=0)
    def reduce(self, tensors: list[torch.Tensor], opts=ReduceOptions()) -> dist.Work:
        op, views = reduce_op(opts.reduceOp), [as_array(t) for t in tensors]
        handles = [self.comm.reduce_async(view, opts.rootRank, op, self._algorithm["reduce"],
                                          self._compress([t]), out=view)
                   for t, view in zip(tensors, views)]
        return HandleWork(handles, lambda: tensors)

    @_refusing("reduce_scatter")
    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor,
                              opts=ReduceScatterOptions()) -> dist.Work:
        return self._reduce_scatter([(output, as_array(input))], opts)

    _reduce_scatter_base = reduce_scatter_single

    @_refusing("reduce_scatter", per=0)
    def reduce_scatter_single_coalesced(self, outputs: list[torch.Tensor],
                                        inputs: list[torch.Tensor],
                                        opts=ReduceScatterOptions()) -> dist.Work:
        return self._reduce_scatter([(o, as_array(i)) for o, i in zip(outputs, inputs)], opts)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    @_refusing("reduce_scatter", per=0)
    def reduce_scatter(self, outputs: list[torch.Tensor], input_lists: list[list[torch.Tensor]],
                       opts=ReduceScatterOptions()) -> dist.Work:
        """Each output gets its block of the reduced inputs (stacked into one copy first)."""
        for output, inputs in zip(outputs, input_lists):
            if any(t.numel() != output.numel() for t in inputs):
                raise ValueError(f"reduce_scatter: every input must hold the output's "
                                 f"{output.numel()} elements, got "
                                 f"{[t.numel() for t in inputs]}")
        return self._reduce_scatter(
            [(o, np.concatenate([as_array(t).reshape(-1) for t in inputs]))
             for o, inputs in zip(outputs, input_lists)], opts)

    def _reduce_scatter(self, pairs: list[tuple[torch.Tensor, np.ndarray]],
                        opts) -> dist.Work:
        op = reduce_op(opts.reduceOp)
        for output, whole in pairs:
            if whole.size != output.numel() * self.size():
                raise ValueError(f"reduce_scatter: the input holds {whole.size} elements, "
                                 f"expected {self.size()} x the output's {output.numel()}")
        # Every view before the first call (a non-contiguous output found while issuing
        # left the calls before it issued, and the refusals after them; the 117th review)
        outs = [flat(output) for output, _ in pairs]
        handles = [self.comm.reduce_scatter_async(whole, op, self._algorithm["reduce_scatter"],
                                                  self._compress([output]), out=out)
                   for (output, whole), out in zip(pairs, outs)]
        return HandleWork(handles, lambda: [output for output, _ in pairs])

    def _refuse(self, collectives: list[str], error: Exception) -> NoReturn:
        """Refuse each collective the op would have issued, in order (each of the peers'
        calls pairs with one: MismatchError there), then raise `error` here."""
        for name in collectives:
            try:
                self.comm.refuse(name, error)
            except BaseException as raised:  # (refuse raises `error` itself)
                if raised is not error:
                    raise
        raise error

    def _compress(self, tensors: list[torch.Tensor]) -> str | None:
        return self._compression if all(compressible(t) for t in tensors) else None

    # ------------------------------------------------------------------ data movement

    def broadcast(self, tensors: list[torch.Tensor], opts=BroadcastOptions()) -> dist.Work:
        """The root's `tensors[opts.rootTensor]` into every tensor of every rank's list
        (torch's list form, as gloo: copies of one tensor, one dtype and size).

        The tensor's byte count and dtype are the call's label, compared with the call:
        rows of 5 and 6 bytes, or of int16 and uint8, pad alike, and only the receivers
        whose row differed saw it (the thirty-ninth review). With the check off nothing
        compares it: an all-gather of every rank's byte count and dtype goes first. (Issued
        with the check on, it paired with a user's all-gather of that shape, which took
        them as data, and, refused, left its broadcast to pair with the next call: the
        ninety-fourth review; with the check off no call is compared anyway.)"""
        root = opts.rootRank
        checked = self.comm.settings.check
        try:
            tensor = _root_tensor(tensors, opts.rootTensor)
            sent = Rows(tensor)
        except Exception as error:  # noqa: BLE001 - e.g. torch's RuntimeError of a conj view
            self._refuse(["broadcast"] if checked else ["allgather", "broadcast"], error)
        nbytes = tensor.numel() * tensor.element_size()
        handles, every = [], None
        if not checked:
            every = np.zeros((self.size(), 2), np.int64)  # alike until the all-gather fills it
            handles.append(self.comm.allgather_async(
                np.array([nbytes, dtype_code(tensor.dtype)], np.int64), out=every))
        handles.append(self.comm.broadcast_async(
            sent.array, root, self._algorithm["broadcast"], out=sent.array,
            label=f"{nbytes} bytes of {tensor.dtype}"))

        def finish() -> list[torch.Tensor]:
            if every is not None:
                _check_like_root(every, root)
            sent.finish()
            for other in tensors:
                if other is not tensor:
                    other.copy_(tensor)
            return tensors

        return HandleWork(handles, finish, lambda: tensors_named([tensor]))

    @_refusing("allgather")
    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor,
                          opts=AllgatherOptions()) -> dist.Work:
        return self._all_gather([(output, input)])

    _allgather_base = all_gather_single

    @_refusing("allgather", per=0)
    def allgather_into_tensor_coalesced(self, outputs: list[torch.Tensor],
                                        inputs: list[torch.Tensor],
                                        opts=AllgatherOptions()) -> dist.Work:
        return self._all_gather(list(zip(outputs, inputs)))

    all_gather_single_coalesced = allgather_into_tensor_coalesced

    def _all_gather(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dist.Work:
        for output, input in pairs:
            if output.numel() != input.numel() * self.size() or output.dtype != input.dtype:
                raise ValueError(f"all_gather: output must hold {self.size()} x the input "
                                 f"({input.numel()} {input.dtype}), got {output.numel()} "
                                 f"{output.dtype}")
        gathered = [Rows(output, self.size()) for output, _ in pairs]
        sent = [Rows(input).array[0] for _, input in pairs]
        handles = [self.comm.allgather_async(row, self._algorithm["allgather"], out=rows.array)
                   for row, rows in zip(sent, gathered)]
        return HandleWork(handles, _finishing(gathered, [output for output, _ in pairs]),
                          lambda: tensors_named([input for _, input in pairs]))

    @_refusing("allgather", per=1)
    def allgather(self, output_lists: list[list[torch.Tensor]], inputs: list[torch.Tensor],
                  opts=AllgatherOptions()) -> dist.Work:
        """Into a list of tensors per input (`output_lists[j][r]`: rank r's input j)."""
        # (the future's value: gloo's, the one list of one input; it was nested in another)
        return self._allgather_lists(output_lists, inputs,
                                     output_lists[0] if len(output_lists) == 1 else None)

    @_refusing("allgather", per=1)
    def allgather_coalesced(self, output_lists: list[list[torch.Tensor]],
                            inputs: list[torch.Tensor], opts=AllgatherOptions()) -> dist.Work:
        """torch's coalesced form: `output_lists[r][j]` is rank r's input j, the transpose
        of the list form's (taken as that form, each rank's inputs landed in the places of
        the others' on every rank, no error; the 112th review)."""
        if len(output_lists) != self.size() or any(len(o) != len(inputs) for o in output_lists):
            raise ValueError(f"all_gather_coalesced: the output must be {self.size()} lists "
                             f"(one per rank) of {len(inputs)} tensors (one per input), got "
                             f"lists of {[len(o) for o in output_lists]}")
        for r, outputs in enumerate(output_lists):  # (named as given, not as transposed)
            for j, (o, t) in enumerate(zip(outputs, inputs)):
                if o.numel() != t.numel() or o.dtype != t.dtype:
                    raise ValueError(f"all_gather_coalesced: outputs[{r}][{j}] holds "
                                     f"{o.numel()} {o.dtype}, input {j} {t.numel()} {t.dtype}")
        per_input = [[outputs[j] for outputs in output_lists] for j in range(len(inputs))]
        return self._allgather_lists(per_input, inputs, output_lists)

    def _allgather_lists(self, output_lists: list[list[torch.Tensor]],
                         inputs: list[torch.Tensor], value) -> dist.Work:
        """Gathered whole, then copied out; `value` (None: output_lists) is the future's."""
        if len(output_lists) != len(inputs):
            raise ValueError(f"all_gather: {len(output_lists)} output lists for "
                             f"{len(inputs)} inputs")
        for outputs, t in zip(output_lists, inputs):
            if len(outputs) != self.size() or any(o.numel() != t.numel() or o.dtype != t.dtype
                                                  for o in outputs):
                got = ", ".join(f"{o.numel()} {o.dtype}" for o in outputs)
                raise ValueError(f"all_gather: the output list must hold {self.size()} tensors "
                                 f"of the input's {t.numel()} {t.dtype}, got [{got}]")
        sent = [Rows(t).array[0] for t in inputs]
        outs = [[Rows(t) for t in outputs] for outputs in output_lists]
        handles = [self.comm.allgather_async(row, self._algorithm["allgather"]) for row in sent]

        def finish() -> list[list[torch.Tensor]]:
            for handle, rows in zip(handles, outs):
                whole = handle.wait()
                for r, row in enumerate(rows):
                    row.array[...] = whole[r].reshape(row.array.shape)
                    row.finish()
            return output_lists if value is None else value

        return HandleWork(handles, finish, lambda: tensors_named(inputs))

    @_refusing("alltoall")
    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor,
                          output_split_sizes: list[int], input_split_sizes: list[int],
                          opts=AllToAllOptions()) -> dist.Work:
        """Equal splits (none given) in place; given splits as blocks of any size."""
        if not output_split_sizes and not input_split_sizes:
            sent = Rows(input, self.size())
            in_place = (output.data_ptr() == input.data_ptr() and output.shape == input.shape
                        and output.dtype == input.dtype)  # the library's out=x
            received = sent if in_place else Rows(output, self.size())
            handle = self.comm.alltoall_async(sent.array, out=received.array,
                                              algorithm=self._algorithm["alltoall"])
            return HandleWork([handle], _finishing([received], [output]),
                              lambda: tensors_named([input]))
        p = self.size()
        return self._alltoall_blocks(_split(input, input_split_sizes, p),
                                     _split(output, output_split_sizes, p), [output],
                                     [input.dtype] * p, [output.dtype] * p)

    alltoall_base = all_to_all_single

    @_refusing("alltoall")
    def alltoall(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor],
                 opts=AllToAllOptions()) -> dist.Work:
        if len(inputs) != self.size() or len(outputs) != self.size():
            raise ValueError(f"all_to_all: the input and output lists must hold "
                             f"{self.size()} tensors each, got {len(inputs)} and {len(outputs)}")
        return self._alltoall_blocks([byte_view(t) for t in inputs],
                                     [byte_view(t) for t in outputs], outputs,
                                     [t.dtype for t in inputs], [t.dtype for t in outputs])

    def _alltoall_blocks(self, sends: list[np.ndarray], receives: list[np.ndarray],
                         result: list[torch.Tensor], send_dtypes: list[torch.dtype],
                         receive_dtypes: list[torch.dtype]) -> dist.Work:
        """Blocks of bytes of any sizes: every rank's block sizes and dtypes gathered first
        (each block must be the size and dtype its receiver expects: ValueError on every
        rank otherwise; the dtypes since the thirty-ninth review, which found bytes of
        another dtype landing unchecked), padded to the largest, exchanged by one
        all-to-all, then unpadded."""
        p = self.size()
        mine = np.array([[b.size for b in (*sends, *receives)],
                         [dtype_code(d) for d in (*send_dtypes, *receive_dtypes)]], np.int64)
        # [r, 0]: rank r's p sends, then its p receives. Queued, then waited: in a completion
        # callback the wait raises, with the call counted on every rank (a blocking call was
        # refused there without being issued: later calls paired with the wrong ones).
        every = self.comm.allgather_async(mine).wait()
        for what, (sent, expected) in (("bytes", (every[:, 0, :p], every[:, 0, p:].T)),
                                       ("dtype", (every[:, 1, :p], every[:, 1, p:].T))):
            if not np.array_equal(sent, expected):  # [r, q]: from rank r to rank q
                r, q = (int(i) for i in np.argwhere(sent != expected)[0])
                got, want = ((f"{sent[r, q]} bytes", expected[r, q]) if what == "bytes" else
                             (dtype_named(int(sent[r, q])), dtype_named(int(expected[r, q]))))
                raise ValueError(f"all_to_all: rank {r} sends {got} to rank {q}, "
                                 f"which expects {want}")
        sizes = every[:, 0]
        words = -(-int(sizes.max(initial=0)) // 4)
        padded = np.zeros((self.size(), words), np.int32)
        for row, block in zip(padded.view(np.uint8), sends):
            row[:block.size] = block
        handle = self.comm.alltoall_async(padded, out=padded,
                                          algorithm=self._algorithm["alltoall"])

        def finish() -> list[torch.Tensor]:
            for row, block in zip(padded.view(np.uint8), receives):
                block[...] = row[:block.size]
            return result

        return HandleWork([handle], finish)

    def barrier(self, opts=BarrierOptions()) -> dist.Work:
        return HandleWork([self.comm.barrier_async()], lambda: [])

    # ------------------------------------------------------------------ point to point

    def send(self, tensors: list[torch.Tensor], dstRank: int, tag: int) -> dist.Work:
        (rows,) = [Rows(t) for t in tensors]
        return MessageWork(self.comm.isend(rows.array, dstRank, tag), tensors, lambda: None)

    def recv(self, tensors: list[torch.Tensor], srcRank: int, tag: int) -> dist.Work:
        (rows,) = [Rows(t) for t in tensors]
        return MessageWork(self.comm.irecv(rows.array, srcRank, tag), tensors, rows.finish)

    def recv_anysource(self, tensors: list[torch.Tensor], tag: int) -> dist.Work:
        raise ValueError("backend 'collectives' receives from a named rank only: pass src")

    def __repr__(self) -> str:
        return f"CollectivesProcessGroup(rank={self.rank()}, size={self.size()}, {self.comm!r})"


def _agree_on_options(comm: Communicator, algorithm: str, compression: str) -> None:
    """MismatchError on every rank where the ranks' options for the group differ: each
    call's mismatch had named a compression the user never passed (the seventy-seventh
    review)."""
    text = f"{algorithm} {compression}".encode()[:_OPTION_BYTES].ljust(_OPTION_BYTES, b"\0")
    rows = comm.allgather(np.frombuffer(text, np.int64))  # (an all-gather takes no bytes)
    if (rows == rows[0]).all():
        return
    said = [dict(zip(("algorithm", "compression"), row.tobytes().rstrip(b"\0").decode().split()))
            for row in rows]
    raise MismatchError(f"backend 'collectives': the ranks' options for this group differ: "
                        f"{differences(said)}; they come from pg_options=BackendOptions(...), "
                        f"else COLLECTIVES_ALGORITHM and COLLECTIVES_COMPRESSION")


def _root_tensor(tensors: list[torch.Tensor], index: int) -> torch.Tensor:
    """`tensors[index]`, the one a list broadcast sends; ValueError (as gloo) for an index
    out of range or a list whose tensors differ in dtype or shape."""
    if not 0 <= index < len(tensors):
        raise ValueError(f"broadcast: invalid root tensor {index} of a list of "
                         f"{len(tensors)} tensors")
    chosen = tensors[index]
    for i, other in enumerate(tensors):
        if other.dtype != chosen.dtype or other.shape != chosen.shape:
            raise ValueError(f"broadcast: the tensors of a list must have one dtype and "
                             f"shape: tensor {i} is {other.dtype} {tuple(other.shape)}, "
                             f"tensor {index} {chosen.dtype} {tuple(chosen.shape)}")
    return chosen


def _check_like_root(kinds: np.ndarray, root: int) -> None:
    """ValueError naming the first rank whose (bytes, dtype code) `kinds[r]` differ from
    the root's."""
    for r in np.flatnonzero((kinds != kinds[root]).any(axis=1)):
        (got, code), (want, root_code) = kinds[r], kinds[root]
        raise ValueError(f"broadcast: rank {r}'s tensor holds {got} bytes of "
                         f"{dtype_named(int(code))}, the root's (rank {root}) {want} bytes of "
                         f"{dtype_named(int(root_code))}")


def _finishing(rows: list[Rows], tensors: list[torch.Tensor]):
    """The finish of a Work whose results were written through `rows`."""
    def finish() -> list[torch.Tensor]:
        for r in rows:
            r.finish()
        return tensors

    return finish


def _split(tensor: torch.Tensor, sizes: list[int], parts: int) -> list[np.ndarray]:
    """A tensor's bytes in `parts` blocks of `sizes` rows of dim 0 (equal if none given)."""
    data = byte_view(tensor)
    if not sizes:
        return list(data.reshape(parts, -1))
    if len(sizes) != parts or sum(sizes) != tensor.shape[0] or min(sizes) < 0:
        raise ValueError(f"all_to_all_single: split sizes {sizes} must be {parts} row counts "
                         f"(>= 0) adding up to dim 0 of the tensor ({tuple(tensor.shape)})")
    row_bytes = data.size // max(tensor.shape[0], 1)
    ends = np.cumsum([0, *sizes]) * row_bytes
    return [data[lo:hi] for lo, hi in zip(ends[:-1], ends[1:])]


def _create(backend: dist.distributed_c10d._DistributedBackendOptions,
            options: BackendOptions | None) -> CollectivesProcessGroup:
    """torch's creator of a "collectives" group (called on the group's members only)."""
    if options is not None and not isinstance(options, BackendOptions):
        raise TypeError(f"pg_options of backend 'collectives' must be a BackendOptions, "
                        f"got {type(options).__module__}.{type(options).__qualname__}")
    comm = group_communicator(backend.store, group_rank=backend.group_rank,
                              group_size=backend.group_size,
                              global_ranks=backend.global_ranks_in_group,
                              timeout=backend.timeout.total_seconds())
    try:
        return CollectivesProcessGroup(comm, options or BackendOptions())
    except BaseException:  # (the ranks refused alike: each closes; a refused group kept its
        with contextlib.suppress(CollectiveError):  # communicator; the seventy-ninth review)
            comm.close()
        raise


dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=["cpu"])
