"""Gradient averaging for any framework: arrays in through DLPack, zero-copy, fused all-reduces.

`GradSync.sync(grads)` averages a list of DLPack-capable arrays (torch tensors, CuPy, NumPy;
JAX arrays too, which are immutable and so come back as new arrays). `GradSync.attach(module)`
overlaps the averaging with a torch backward pass: gradients are grouped into buckets once,
and each bucket's fused all-reduce starts on the communicator's progress thread as soon as
all its gradients are ready; `wait()` before the optimizer step. `broadcast_parameters`
copies rank 0's parameters to every rank.

Example::

    sync = collectives.GradSync(comm, fusion_bytes=25 << 20).attach(model)
    for batch in data:
        loss_fn(model(batch)).backward()
        sync.wait()                      # gradients are now averaged over the ranks
        optimizer.step()
        optimizer.zero_grad()
"""
from __future__ import annotations

import hashlib
import itertools
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import ml_dtypes
import numpy as np

import kernels

from .agreement import differences
from .calls.collective import check_root
from .communicator import Communicator
from .errors import CollectiveError, MismatchError, outliers
from .options import CallOptions
from .progress import Handle
from .validation import array_list, sharing_pair

__all__ = ["GradSync", "broadcast_parameters", "as_array", "layout_digest"]

_DLPACK_CPU = 1
_JAX = ("jax", "jaxlib")
_JAX_ALIGNMENT = 64  # JAX adopts host memory through DLPack without a copy at this alignment
_DLPACK_GPU = (2, 3, 10)  # CUDA, CUDA host, ROCm


def as_array(x) -> Any:
    """A NumPy or CuPy array over x's memory (zero-copy through DLPack).

    torch tensors are detached first (autograd refuses to export otherwise); bfloat16,
    which NumPy's DLPack does not know, travels as int16 and is viewed back. JAX arrays give
    read-only views (a bfloat16 one is a copy: XLA bitcasts into a new buffer).

    Example::

        >>> t = torch.zeros(3); a = as_array(t); a += 1; t
        tensor([1., 1., 1.])
    """
    if getattr(getattr(x, "dtype", None), "names", None):  # records, such as JAX's float0
        raise TypeError(f"unsupported dtype {x.dtype}: a leaf with no values "
                        "(jax.grad(..., allow_int=True) gives float0 for integer inputs); "
                        "leave such leaves out")
    if getattr(getattr(x, "dtype", None), "hasobject", False):  # (its bytes are addresses)
        raise TypeError(f"unsupported dtype {x.dtype}: an array of Python objects holds "
                        "references, not values to move")
    if isinstance(x, np.ndarray) or _module(x) == "cupy":
        return x
    if _module(x) in _JAX and "Tracer" in type(x).__name__:
        raise TypeError(f"a traced JAX value (inside jax.jit, grad or vmap: "
                        f"{type(x).__name__}) has no values to move yet: call the "
                        "collectives outside traced functions, on concrete arrays")
    if not hasattr(x, "__dlpack_device__"):
        raise TypeError(f"expected an array that supports DLPack (torch, CuPy, NumPy, JAX), "
                        f"got {type(x).__module__}.{type(x).__qualname__}")
    view_as = None
    if _module(x) == "torch":
        import torch

        x = x.detach()
        if x.layout != torch.strided or x.is_nested:  # (DLPack's errors named neither)
            kind = "nested" if x.is_nested else str(x.layout)
            raise TypeError(f"a torch tensor of layout {kind} (sparse, nested, MKL-DNN) has "
                            "no dense values to reduce: make dense gradients (e.g. "
                            "nn.Embedding(sparse=False)) or call .to_dense() first")
        if x.dtype == torch.bfloat16:
            x, view_as = x.view(torch.int16), ml_dtypes.bfloat16
    elif _module(x) in _JAX:
        if getattr(x, "is_deleted", bool)():  # (JAX said "'NoneType' has no len()")
            raise TypeError("a JAX array that was deleted or donated (jit(donate_argnums=...), "
                            ".delete()) has no values to reduce")
        if x.dtype == ml_dtypes.bfloat16:
            x, view_as = x.view(np.int16), ml_dtypes.bfloat16  # a bitcast: XLA makes a copy
    device, _ = x.__dlpack_device__()
    if device not in (_DLPACK_CPU, *_DLPACK_GPU):
        raise TypeError(f"arrays on DLPack device type {device} are not supported; "
                        f"accepted: CPU ({_DLPACK_CPU}) and GPU {_DLPACK_GPU}")
    try:
        if device == _DLPACK_CPU:
            array = np.from_dlpack(x)
        else:
            import cupy

            array = cupy.from_dlpack(x)
    except RuntimeError as error:  # (float8, int4: a RuntimeError no refusal took, so the
        raise TypeError(f"unsupported dtype {x.dtype}: DLPack cannot export it ({error})"
                        ) from None  # ranks fell out of step; the eighty-seventh review)
    return array if view_as is None else array.view(view_as)


def check_communicator(comm) -> None:
    """TypeError unless `comm` is a Communicator (there is no peer to tell otherwise)."""
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a collectives.Communicator (collectives.init()), "
                        f"got {type(comm).__module__}.{type(comm).__qualname__}")


def check_options(comm, algorithm: str | None, compression: str | None, error_feedback: bool,
                  fusion_bytes: int | None = None) -> CallOptions:
    """The checks shared by GradSync and the torch hooks: the communicator, then the options
    of the averaging all-reduce (CallOptions.parse; algorithm None is the communicator's,
    COLLECTIVES_ALGORITHM or auto); each failure says what is accepted."""
    check_communicator(comm)
    if not isinstance(error_feedback, bool):
        raise TypeError(f"error_feedback must be a bool, got {error_feedback!r}")
    return CallOptions.parse(
        op="avg", algorithm=comm.settings.algorithm if algorithm is None else algorithm,
        compression=compression, error_feedback=error_feedback,
        fusion_bytes=comm.settings.fusion_bytes if fusion_bytes is None else fusion_bytes,
        deterministic=comm.settings.deterministic)  # what its calls will run with


def broadcast_parameters(params: Iterable | Mapping, comm: Communicator, *, root: int = 0) -> list:
    """Copy rank `root`'s arrays to every rank, bit for bit; returns them (see GradSync.sync).

    `params`: DLPack-capable arrays of any dtype (bool masks and uint8 buffers too), or a
    mapping such as `module.state_dict()` (its values). Their bytes travel in one
    broadcast; an array under several keys (tied weights) once.

    Example::

        collectives.broadcast_parameters(model.state_dict(), comm)
    """
    with comm.refusing("allgather"):  # the others compare layouts: refused there too
        root = check_root(root, comm.size)
        keys, items, names = _entries(params)
    views, outs = _views_or_refuse(comm, items, "allgather")
    twins = _first_twins(views, items)  # tied weights: one array under several keys
    distinct = [i for i, t in enumerate(twins) if t == i]
    with comm.refusing("allgather"):
        _refuse_overlaps([outs[i] for i in distinct], distinct, keys)
    _agree_with_root(comm, views, names, twins, root)
    modules = dict.fromkeys(_module(views[i]) for i in distinct)  # one broadcast per module
    for module in modules:
        chosen = [i for i in distinct if _module(views[i]) == module]
        _broadcast_bytes(comm, [views[i] for i in chosen], [outs[i] for i in chosen], root)
    return [_returned(item, views[t], outs[t]) for item, t in zip(items, twins)]


def _agree_with_root(comm: Communicator, views: list, names: list, twins: list[int],
                     root: int) -> None:
    """MismatchError on every rank where a rank's arrays differ from the root's in number,
    keys, order, shapes, dtypes or ties (one small all-gather first): the broadcast
    compares byte counts only, and float32 bits landed in int32 arrays, one mapping's "b"
    in another's "a" (the forty-fourth review)."""
    layout = [(name, _module(v), tuple(v.shape), str(v.dtype), tie if v.size else i)
              for i, (name, v, tie) in enumerate(zip(names, views, twins))]
    digest = hashlib.blake2b(repr(layout).encode(), digest_size=16).digest()  # (a crc32
    mine = np.array([*np.frombuffer(digest, np.int64), len(layout)], np.int64)  # collided)
    rows = comm.allgather(mine)
    differ = [r for r in range(comm.size) if (rows[r] != rows[root]).any()]
    if differ:
        shown = ", ".join(f"{'' if n is None else f'{n}: '}{d} {shape}"
                          for n, _, shape, d, _ in layout[:6]) + (
                              ", ..." if len(layout) > 6 else "")
        raise MismatchError(f"broadcast_parameters: the ranks' arrays differ from the root's "
                            f"(rank {root}) in number, keys, order, shapes, dtypes or tied "
                            f"arrays: rank(s) {differ} (rank {comm.rank} has {len(layout)}: "
                            f"{shown})")


def _entries(params) -> tuple[list | None, list, list]:
    """(keys, arrays, the keys' texts) of a mapping, or (None, arrays, Nones) of a sequence;
    any error reading them a ValueError, which the caller's refusal passes to the peers (a
    KeyError or a raising repr left them waiting out the timeout)."""
    try:
        if not isinstance(params, Mapping):
            items = list(params)
            return None, items, [None] * len(items)
        keys = list(params)
        return keys, [params[k] for k in keys], [_key_text(k) for k in keys]
    except (TypeError, ValueError):
        raise
    except Exception as error:  # noqa: BLE001 - whatever the caller's mapping raises
        raise ValueError(f"broadcast_parameters could not read params: "
                         f"{type(error).__name__}: {error}") from error


_PLAIN_KEYS = {str: repr, bytes: repr, bool: repr, int: hex, float: float.hex,
               type(None): repr}
_NUMPY_KEYS = (np.integer, np.floating, np.bool_, np.str_, np.bytes_)
_KEY_DEPTH = 16


def _key_text(key, depth: int = 0) -> str:
    """A mapping key as the ranks compare it, exactly: a str, bytes, bool, int, float or
    None (of these very types: a subclass's repr is its own), NumPy scalars of them as
    Python's, tuples of them, and sets of str or bytes (sorted: their order follows each
    process's hash seed). TypeError for any other key, whose text two ranks could not
    compare (the forty-seventh, forty-ninth and fiftieth reviews: keys that differed
    passed, equal keys were refused, a raising repr left the peers waiting)."""
    if isinstance(key, _NUMPY_KEYS):
        key = key.item()
    text = _PLAIN_KEYS.get(type(key))
    if text is not None:
        return f"{type(key).__name__}:{text(key)}"
    if depth < _KEY_DEPTH and type(key) is tuple:
        return f"({', '.join(_key_text(k, depth + 1) for k in key)},)"
    if type(key) in (set, frozenset) and len({type(k) for k in key} - {str, bytes}) == 0:
        return f"{type(key).__name__}({sorted(map(repr, key))})"
    raise TypeError(f"broadcast_parameters compares the ranks' mapping keys, and cannot "
                    f"compare a key of type {type(key).__qualname__}: use str, bytes, "
                    "numbers, None, tuples of them or sets of strings, or pass "
                    "list(params.values()) to broadcast by position")


def _refuse_overlaps(outs: list, indices: list[int], keys: list | None) -> None:
    """ValueError for two arrays that share memory without being the same one (w and w.T:
    one's bytes would land over the other's; tied weights, the very same array, travel
    once); `indices`: the outs' places among the params."""
    shared = sharing_pair(outs)
    if shared is not None:
        a, b = (indices[i] for i in shared)
        names = [f"[{k!r}]" for k in (keys[a], keys[b])] if keys else [f"[{a}]", f"[{b}]"]
        raise ValueError(f"broadcast_parameters: params{names[0]} and params{names[1]} share "
                         "memory without being the same array; pass each memory once")


def _broadcast_bytes(comm: Communicator, views: list, outs: list, root: int) -> None:
    """Rank root's `views` into every rank's `outs` (the root's only where an out is not
    its view), as one broadcast of their bytes in 32-bit words."""
    xp = _module_of(views[0])
    ends = list(itertools.accumulate((v.nbytes for v in views), initial=0))
    words = xp.zeros(-(-ends[-1] // 4), np.int32)
    raw = words.view(np.uint8)
    if comm.rank == root:
        for view, lo, hi in zip(views, ends, ends[1:]):
            raw[lo:hi] = xp.ascontiguousarray(view).reshape(-1).view(np.uint8)
    comm.broadcast(words, root, out=words)
    for view, out, lo, hi in zip(views, outs, ends, ends[1:]):
        if comm.rank != root or out is not view:
            out[...] = raw[lo:hi].view(out.dtype).reshape(out.shape)


def _first_twins(views: list, items: list) -> list[int]:
    """Per view, the index of the first view of the very same memory (itself if none). JAX
    arrays are never tied: immutable, each gets a new array (one under two keys on one rank
    only was refused as a mismatch; the eighty-seventh review)."""
    first: dict[tuple, int] = {}
    return [i if _module(item) in _JAX else first.setdefault(_memory(v), i)
            for i, (v, item) in enumerate(zip(views, items))]


def _memory(view) -> tuple:
    """What identifies the memory a view covers: module, address, shape, strides, dtype."""
    address = (view.__array_interface__["data"][0] if isinstance(view, np.ndarray)
               else view.data.ptr)
    return _module(view), address, view.shape, view.strides, str(view.dtype)


class GradSync:
    """Averages gradients over the ranks of `comm`, fused, zero-copy.

    `algorithm` and `compression` are those of `Communicator.allreduce`; `fusion_bytes`
    (default: the communicator's, COLLECTIVES_FUSION_BYTES) caps a fused buffer, and is
    the bucket size of `attach`; `error_feedback` needs a compression.

    Example::

        sync = collectives.GradSync(comm, compression="bf16")
        grads = sync.sync([p.grad for p in model.parameters()])
    """

    __slots__ = ("comm", "algorithm", "compression", "fusion_bytes", "error_feedback",
                 "_name", "_buckets", "_step", "_hooks", "_module", "_names", "__weakref__")

    def __init__(self, comm: Communicator, *, algorithm: str | None = None,
                 compression: str | None = None, fusion_bytes: int | None = None,
                 error_feedback: bool = False):
        options = check_options(comm, algorithm, compression, error_feedback, fusion_bytes)
        self.comm = comm
        self.algorithm = options.algorithm
        self.compression = options.compression
        self.fusion_bytes = options.fusion_bytes
        self.error_feedback = error_feedback
        # Names its residuals: the same on every rank, as ranks make their GradSyncs in order.
        self._name = instance_name(comm, "gradsync")
        self._buckets: list[list] = []  # attach: parameters per bucket, in launch order
        self._step = _Step(0)
        self._hooks: list = []
        self._module = None  # attach: a weak reference to the module
        self._names: dict[int, str] = {}  # attach: id(parameter) -> its name

    def sync(self, grads: Iterable) -> list:
        """Average `grads` over the ranks; returns them (averaged in place), with immutable
        arrays (JAX) replaced by new ones. With error feedback, calls with the same shapes
        and dtypes share one residual: use one GradSync per set of gradients (per model)."""
        with self.comm.refusing("allreduce_many"):
            items = array_list(grads, "GradSync.sync")
        views, outs = _views_or_refuse(self.comm, items)
        with self.comm.refusing("allreduce_many"):
            # (it said "out[0] and out[1]", or "arrays[0] and out[1]", share memory: no out
            # was passed; the 110th review)
            tied = sharing_pair(views, written=[o is v for v, o in zip(views, outs)])
            if tied is not None:
                raise ValueError(f"grads[{tied[0]}] and grads[{tied[1]}] share memory: a "
                                 "gradient averaged in place must be memory no other "
                                 "gradient uses")
        self.comm.allreduce_many(views, **self._options(f"sync-{layout_digest(views)}"),
                                 out=outs)
        return [_returned(g, v, o) for g, v, o in zip(items, views, outs)]

    def attach(self, module) -> "GradSync":
        """Average `module`'s gradients during backward (torch): call `wait()` after each
        backward, before the optimizer step.

        Parameters go into buckets of about `fusion_bytes` in reverse order of registration
        (roughly the order backward produces them, as DDP does); a bucket's all-reduce starts
        when all of its gradients are accumulated and every earlier bucket has started, so
        every rank issues the same collectives in the same order. The ranks compare their
        buckets here (one all-gather): ValueError on every rank where they differ (a layer
        frozen on one rank only would pair other parameters' gradients); a module refused
        on one rank (nothing to average, a sparse or non-float parameter) raises there and
        MismatchError on the others.
        """
        if self._hooks:
            raise RuntimeError("this GradSync is already attached; make one GradSync per module")
        with self.comm.refusing("allgather"):  # (the others are in _agree_on_buckets)
            if not callable(getattr(module, "named_parameters", None)):
                raise TypeError(f"GradSync.attach takes a torch.nn.Module, got "
                                f"{type(module).__module__}.{type(module).__qualname__}")
            _refuse_undense(module)
            named = {p: name for name, p in module.named_parameters() if p.requires_grad}
            params = list(named)
            if not params:
                raise ValueError(f"{type(module).__name__} has no parameters that require grad")
            _refuse_attached_elsewhere(named)
            buckets = _buckets(params, self.fusion_bytes)
        self._buckets = buckets
        self._agree_on_buckets([named[p] for b in self._buckets for p in b])
        self._module = weakref.ref(module)
        self._names = {id(p): name for p, name in named.items()}
        _ATTACHED.add(self)
        self._step = _Step(len(self._buckets))
        index = {id(p): b for b, members in enumerate(self._buckets) for p in members}
        # Before autograd adds a gradient into p.grad: refuse one for a bucket on the wire
        # (the all-reduce reads and writes p.grad). After: count it in. Each hook is kept as
        # it is made (kept all at the end, an interrupt before left hooks that detach() did
        # not know, and attach then took another GradSync; the ninety-fifth review).
        hooks = self._hooks
        for p in params:
            b = index[id(p)]
            hooks.append(p.register_hook(lambda grad, b=b: self._check_open(b) or grad))
            hooks.append(p.register_post_accumulate_grad_hook(
                lambda param, b=b: self._grad_ready(param, b)))
        return self

    def wait(self) -> None:
        """Finish this step's all-reduces: gradients are averaged when it returns.

        Buckets that did not fill (parameters unused this step) are launched with zeros for
        the missing gradients, so every rank ends with the same gradients; a gradient that
        no rank holds stays None, as under DDP (the optimizer skips it: zeros moved weights
        through momentum, weight decay and Adam's state). A gradient held anywhere (made by
        backward, accumulated while detached, set by hand) is averaged on every rank. Where
        a bucket's all-reduce fails, the error is raised once every launched bucket has
        ended: none writes a gradient after this returns or raises. An interrupt (Ctrl-C)
        is raised at once and leaves the step's all-reduces running: call wait() again to
        finish them (it issues nothing twice); a backward before that is refused.
        """
        failure = None
        step = self._step
        try:
            self._fill_missing()
            self._launch(len(self._buckets))
            if self._buckets and step.held is None:  # (not attached, or detached: nothing)
                shared = None if step.refusal is not None else self._sharing(
                    [p for p, _ in step.views], [view for _, view in step.views])
                step.refusal = step.refusal or shared  # (the others learn of it from held)
                step.held = self._issue_held()
                if shared is not None:
                    raise shared
        except Exception as error:  # (the buckets launched before it still run)
            failure = error
        try:
            for handle in step.handles + ([step.held] if step.held else []):
                try:
                    handle.wait()
                except Exception as error:  # (a MismatchError leaves later ones running)
                    failure = failure or error
            if failure is not None:
                raise failure
            if step.filled and step.held is not None:  # (None: detached before it was issued)
                anywhere = step.held.wait()
                for position, p in step.filled:
                    if not anywhere[position]:
                        p.grad = None
        except Exception:
            self._step = _Step(len(self._buckets))
            raise
        # One assignment ends the step: an interrupt lands before it (wait() again finishes
        # this step) or after (the next step's); resetting its parts one by one, one landing
        # between them made the retry launch every bucket again (the seventy-ninth review).
        self._step = _Step(len(self._buckets))
        self._refuse_unattached_gradients()

    def _refuse_unattached_gradients(self) -> None:
        """CollectiveError, once the step ended, naming a parameter of the module that has
        a gradient but is in no bucket (trainable only after attach, or added after it):
        its gradient was not averaged, and the replicas drifted apart silently (the
        ninety-first review)."""
        module = self._module() if self._module is not None else None
        if module is None:
            return
        names = self._names
        # named_parameters(), attach's view: a module may hide some (a teacher)
        outside = [(name, p) for name, p in module.named_parameters()
                   if id(p) not in names and p.requires_grad and p.grad is not None]
        if outside:  # (those another attached GradSync averages are fine: the 93rd review)
            theirs = {id(p) for other in list(_ATTACHED) if other is not self and other._hooks
                      for bucket in other._buckets for p in bucket}
            outside = [(name, p) for name, p in outside if id(p) not in theirs]
        if outside:
            name = outside[0][0]
            raise CollectiveError(
                f"GradSync.wait: parameter {name} has a gradient but was not attached (it "
                "required no grad at attach, or was added after): its gradient is not "
                "averaged; after changing which parameters train, call detach() and "
                "attach(module) again")

    def _fill_missing(self) -> None:
        """Zeros for the gradients missing from the buckets not launched yet, noted."""
        position = sum(map(len, self._buckets[:self._launched]))
        for members in self._buckets[self._launched:]:
            for p in members:
                if p.grad is None:
                    self._step.filled.append((position, p))  # (first: an interrupt between the
                    p.grad = p.detach().new_zeros(p.shape)  # two notes it twice, harmlessly)
                position += 1

    def _issue_held(self) -> Handle:
        """The all-reduce (max) of which gradients this rank held before `_fill_missing`."""
        if self._step.refusal is not None:
            return self.comm.refuse_async("allreduce", self._step.refusal)
        held = np.ones(sum(map(len, self._buckets)), np.int32)
        held[[position for position, _ in self._step.filled]] = 0
        return self.comm.allreduce_async(held, op="max")

    def detach(self) -> None:
        """Remove the hooks that `attach` registered; CollectiveError while this step's
        all-reduces run (they write the gradients: after a detach they went on writing
        them, into a next backward's too; the ninety-first review): wait() first."""
        if self._step.handles:
            raise CollectiveError("GradSync.detach: this step's all-reduces were launched "
                                  "and not waited for: call wait() first (they write the "
                                  "gradients)")
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._buckets = []
        self._module = None
        self._names = {}
        _ATTACHED.discard(self)

    def _check_open(self, bucket: int) -> None:
        """CollectiveError, before autograd writes, for a gradient of a launched bucket."""
        if bucket < self._launched:
            interrupted = " (a wait() was interrupted: call it again to finish that step)" \
                if self._step.held is not None else ""
            raise CollectiveError(
                f"a gradient of bucket {bucket} arrived after its all-reduce started{interrupted}"
                ": call GradSync.wait() after every backward (gradient accumulation over several "
                "backwards needs a detach() meanwhile); a model that accumulates a "
                "parameter's gradient twice within one backward (reentrant checkpointing "
                "runs a backward inside it) needs sync() after backward instead; "
                "torch.autograd.grad of the parameters runs this check too: call it after "
                "wait()")

    def _grad_ready(self, param, bucket: int) -> None:
        ready = self._step.ready
        ready[bucket].add(id(param))  # (counted once: a bucket waits for them all)
        complete = self._launched
        buckets = self._buckets
        while complete < len(buckets) and len(ready[complete]) == len(buckets[complete]):
            complete += 1
        self._launch(complete)

    def _agree_on_buckets(self, names: list[str]) -> None:
        """ValueError on every rank when the ranks' parameters differ (count, names, shapes,
        dtypes), naming the first that differs, or their buckets (fusion_bytes)."""
        flat = [p for b in self._buckets for p in b]
        mine = np.array([*layout_digest(flat), *_digest(repr(names)), len(flat),
                         len(self._buckets), self.fusion_bytes], np.int64)
        rows = self.comm.allgather(mine)
        if (rows == rows[0]).all():
            return
        self._buckets = []
        if (rows[:, :5] == rows[0, :5]).all():  # the same parameters
            raise ValueError(f"GradSync.attach: the ranks' fusion_bytes differ (it makes the "
                             f"buckets, and every bucket's call carries it): "
                             f"{differences([{'fusion_bytes': str(row[6])} for row in rows])}")
        # Every rank is here: a second all-gather finds the first parameter that differs.
        described = [f"{name} {tuple(p.shape)} {p.dtype}" for name, p in zip(names, flat)]
        each = np.zeros(int(rows[:, 4].max()), np.int64)
        each[:len(flat)] = [_digest(text)[0] for text in described]
        first = int(np.argmax((self.comm.allgather(each) != each).any(axis=0)))
        here = described[first] if first < len(flat) else f"nothing (it has {len(flat)})"
        said = ", ".join(f"rank {r}: {n} parameters" for r, n in enumerate(rows[:, 4].tolist()))
        raise ValueError(f"GradSync.attach: the ranks' parameters that require grad differ "
                         f"in number, names, order, shapes or dtypes: {outliers(rows[:, :5])} "
                         f"({said}); the first that differs is parameter #{first} in bucket "
                         f"order (the reverse of registration): on rank {self.comm.rank} "
                         f"{here}. Every rank must build the same model and freeze the same "
                         f"parameters")

    def _launch(self, up_to: int) -> None:
        """Start the all-reduces of buckets [launched, up_to). A gradient that is no dense
        array (set by hand) refuses its bucket and every later call of the step here, so
        the other ranks' calls fail (MismatchError) and stay paired with this rank's."""
        step = self._step
        for b in range(self._launched, up_to):
            if step.refusal is None:
                try:
                    views = [self._gradient(p) for p in self._buckets[b]]
                    # (named here: the peers were told "out[0] and out[1]"; the 111th
                    # review)
                    shared = self._sharing(self._buckets[b], views)
                    if shared is not None:
                        raise shared
                except (TypeError, ValueError, BufferError) as error:
                    step.refusal = error
            if step.refusal is None:
                made = self.comm.allreduce_many_async(views, **self._options(f"bucket{b}"),
                                                      out=views)
                step.views.extend(zip(self._buckets[b], views))
            else:
                made = self.comm.refuse_async("allreduce_many", step.refusal)
            step.handles.append(made)

    def _sharing(self, params: list, views: list) -> ValueError | None:
        """ValueError naming two of `params` whose gradients (`views`) share memory, or
        None: each bucket averages its gradients in place, so one bucket's all-reduce ran
        while backward added another's gradient into the same memory (8-16 of 20 steps
        averaged wrongly, no error; the 110th review)."""
        pair = sharing_pair(views)
        if pair is None:
            return None
        first, second = (self._names.get(id(params[i]), "a parameter") for i in pair)
        return ValueError(f"GradSync.wait: the gradients of {first} and {second} share "
                          "memory: each is averaged in place, so each .grad must be memory "
                          "of its own")

    def _gradient(self, p):
        """p.grad as an array; the error naming the parameter where it is none (sparse)."""
        try:
            return as_array(p.grad)
        except (TypeError, ValueError, BufferError) as error:
            raise type(error)(f"the gradient of {self._names.get(id(p), 'a parameter')}: "
                              f"{error}") from None

    @property
    def _launched(self) -> int:
        """Buckets launched this step: their handles' count, so that no interrupt between
        two statements can leave a launched bucket counted out (launched again)."""
        return len(self._step.handles)

    def _options(self, part: str) -> dict:
        feedback = f"{self._name}-{part}" if self.error_feedback else False
        return dict(op="avg", algorithm=self.algorithm, compression=self.compression,
                    fusion_bytes=self.fusion_bytes, error_feedback=feedback)


class _Step:
    """What GradSync.attach's current step has done: replaced whole when it ends."""

    __slots__ = ("ready", "handles", "views", "filled", "held", "refusal")

    def __init__(self, buckets: int):
        self.ready: list[set[int]] = [set() for _ in range(buckets)]  # ids of parameters ready
        self.handles: list[Handle] = []  # the buckets launched (a prefix)
        self.views: list[tuple[Any, Any]] = []  # (parameter, gradient) of the buckets issued
        self.filled: list[tuple[int, Any]] = []  # (position among the parameters, parameter)
        self.held: Handle | None = None  # which gradients a rank held: issued once a step
        self.refusal: Exception | None = None  # why this rank refuses the rest of its step


def layout_digest(arrays) -> tuple[int, int]:
    """A digest of the arrays' shapes and dtypes, in order (None: a separator), for ranks
    to compare what they pass: 128 bits, as two int64 (a crc32 let two layouts of one
    checksum, found in a second, mix one rank's weights with another's biases in
    ShardedSync; the fifty-eighth review)."""
    return _digest(repr([None if a is None else (tuple(a.shape), str(a.dtype))
                         for a in arrays]))


def _digest(text: str) -> tuple[int, int]:
    """128 bits of `text`, as two int64."""
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return tuple(int(word) for word in np.frombuffer(digest, np.int64))


_ATTACHED: "weakref.WeakSet[GradSync]" = weakref.WeakSet()  # attached, not detached


def _refuse_attached_elsewhere(named: dict) -> None:
    """ValueError naming a parameter another attached GradSync averages: both launched
    their all-reduces, one never waited for, and every later step failed as "a gradient
    arrived after its all-reduce started" (a DistributedOptimizer made again for one
    module; the ninety-first review)."""
    for other in list(_ATTACHED):
        if not other._hooks:  # (a detach() interrupted after removing them)
            continue
        theirs = {id(p) for bucket in other._buckets for p in bucket}
        shared = next((name for p, name in named.items() if id(p) in theirs), None)
        if shared is not None:
            raise ValueError(f"GradSync.attach: parameter {shared} is attached to another "
                             "GradSync: call its detach() first (a DistributedOptimizer's: "
                             "opt.sync.detach())")


def _buckets(params: list, fusion_bytes: int) -> list[list]:
    """`params` in reverse order, in buckets of about `fusion_bytes`."""
    buckets: list[list] = []
    bucket: list = []
    size = 0
    for p in reversed(params):
        nbytes = p.numel() * p.element_size()
        if bucket and size + nbytes > fusion_bytes:
            buckets.append(bucket)
            bucket, size = [], 0
        bucket.append(p)
        size += nbytes
    buckets.append(bucket)
    return buckets


def _refuse_undense(module) -> None:
    """What attach cannot average, by name: a parameter of a dtype other than float16,
    bfloat16, float32 or float64 (a complex one failed in wait() with "unsupported dtype",
    a float8 one in every wait(); the ninety-first review), one a lazy module has not made
    yet (torch's error in numel() on one rank left the others waiting), a trainable
    embedding that makes sparse gradients (a raw BufferError in backward; the eighteenth
    review)."""
    import torch
    from torch import nn

    averaged = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for name, p in module.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(f"GradSync.attach: parameter {name} is not initialized yet (a "
                             "lazy module): run a forward pass before attach")
        if p.requires_grad and p.dtype not in averaged:
            raise TypeError(f"GradSync.attach: parameter {name} is {p.dtype}; gradients are "
                            "averaged as float16, bfloat16, float32 or float64")

    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)) and layer.sparse \
                and layer.weight.requires_grad:
            raise ValueError(f"GradSync.attach: {name or type(layer).__name__} "
                             f"({type(layer).__name__}) makes sparse gradients, which GradSync "
                             "does not average; construct it with sparse=False")


_created: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # comm -> helpers made


def instance_name(comm: Communicator, kind: str) -> str:
    """A name for a helper's error-feedback residuals, the same on every rank (helpers are
    made in the same order there) and its own among the communicator's helpers (an id()
    differs between processes; a fixed name mixes two models' residuals)."""
    return f"{kind}{next(_created.setdefault(comm, itertools.count()))}"


def _views_or_refuse(comm: Communicator, items: list,
                     collective: str = "allreduce_many") -> tuple[list, list]:
    """(array views of `items`, the buffers their results go to); an item that is no array
    (a float, a JAX tracer) refuses `collective` on every rank, so the others do not wait
    out the timeout."""
    with comm.refusing(collective):
        views = []
        for i, item in enumerate(items):
            try:
                views.append(as_array(item))
            except (TypeError, ValueError, BufferError) as error:  # which one, of how many
                raise type(error)(f"item {i} of {len(items)}: {error}") from None
        return views, [_result_buffer(item, v) for item, v in zip(items, views)]


def _module(x) -> str:
    return type(x).__module__.split(".")[0]


def _module_of(array):
    return kernels.array_module(array)


def _result_buffer(original, view):
    """Where the result of reducing `view` goes: `view` itself, or, for immutable arrays
    (JAX, read-only NumPy), a new array (JAX's aligned, so that it becomes a JAX array
    without a copy)."""
    if _module(original) not in _JAX and getattr(view.flags, "writeable", True):
        return view
    if _module(original) not in _JAX or not isinstance(view, np.ndarray):
        return _module_of(view).empty_like(view)
    raw = np.empty(view.nbytes + _JAX_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _JAX_ALIGNMENT
    return raw[start:start + view.nbytes].view(view.dtype).reshape(view.shape)


def _returned(original, view, out):
    """What sync hands back: the original when reduced in place, else a new array."""
    if out is view:
        return original
    if _module(original) in _JAX:
        import jax.numpy as jnp

        device = original.device  # (a leaf on another device came back on the default
        if out.dtype == ml_dtypes.bfloat16:  # one: the eighty-seventh review)
            return jnp.from_dlpack(out.view(np.int16), device=device).view(jnp.bfloat16)
        return jnp.from_dlpack(out, device=device)
    return out
