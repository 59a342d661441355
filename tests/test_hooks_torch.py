"""PyTorch glue: DLPack views, argument checks (one process), and training under mpiexec.

The one-process tests run on a single-rank communicator that collectives.init() builds from
torchrun's environment variables, set here (a world of one needs no launcher).
"""
import dataclasses
import os
import socket
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed")

import collectives  # noqa: E402
from collectives.gradsync import as_array  # noqa: E402
from collectives.hooks.torch import DistributedOptimizer, HookState  # noqa: E402
from tests.interrupts import interrupt_at_line  # noqa: E402
from tests.mpirun import ROOT, mpiexec, run_workers  # noqa: E402


@pytest.fixture(scope="module")
def comm():
    """A one-rank Communicator over the torch transport."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as env:
        for key in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
            env.delenv(key, raising=False)
        for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
            env.setenv(key, value)
        communicator = collectives.init()
    yield communicator
    dist.destroy_process_group()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64", "int32", "int64"])
def test_as_array_views_tensor_memory(dtype):
    tensor = torch.zeros(6, dtype=getattr(torch, dtype))
    view = as_array(tensor)
    expected = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    assert view.dtype == np.dtype(expected) and view.shape == (6,)
    view[2] = 5
    assert tensor[2].item() == 5


def test_as_array_detaches_parameters_and_keeps_strides():
    param = torch.nn.Parameter(torch.zeros(4, 6))
    view = as_array(param[:, ::2])
    view += 1
    assert param.detach()[:, ::2].eq(1).all() and param.detach()[:, 1::2].eq(0).all()


def test_as_array_rejects_non_arrays():
    with pytest.raises(TypeError, match=r"supports DLPack .* got builtins.list"):
        as_array([1.0, 2.0])


@pytest.mark.parametrize("make, layout", [
    (lambda: torch.ones(2, 3).to_sparse(), "torch.sparse_coo"),
    (lambda: torch.ones(2, 3).to_sparse_csr(), "torch.sparse_csr"),
    (lambda: torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]), "nested")])
def test_as_array_names_a_tensor_without_dense_values(make, layout):
    """DLPack's BufferError named neither the tensor nor its layout (the fifty-fourth
    review); a nested tensor raised torch's RuntimeError, which no refusal caught (the
    fifty-sixth)."""
    with pytest.raises(TypeError, match=f"a torch tensor of layout {layout} "):
        as_array(make())


def test_an_array_of_objects_is_refused_by_name(comm):
    """Its bytes are addresses: broadcast_parameters raised NumPy's "Cannot change data-type
    for array of references" on the root only, after the ranks agreed, the others left
    waiting (the fifty-eighth review)."""
    with pytest.raises(TypeError, match="an array of Python objects holds references"):
        as_array(np.array([object(), 1], dtype=object))
    with pytest.raises(TypeError, match="Python objects"):
        collectives.broadcast_parameters([np.zeros(2), np.array([1, None])], comm)


def test_hook_state_checks_its_arguments(comm):
    with pytest.raises(TypeError, match="comm must be a collectives.Communicator"):
        HookState(object())
    with pytest.raises(ValueError, match="unknown algorithm 'rign'"):
        HookState(comm, algorithm="rign")
    with pytest.raises(ValueError, match="unknown compression 'fp8'"):
        HookState(comm, compression="fp8")
    with pytest.raises(ValueError, match="error_feedback needs compression"):
        HookState(comm, error_feedback=True)
    state = HookState(comm, algorithm="ring", compression="bf16", error_feedback=True)
    with pytest.raises(AttributeError):
        state.extra = 1  # __slots__


def test_gradsync_checks_its_arguments(comm):
    for bad in (0, -5, True, 1.5, 1 << 63):
        with pytest.raises(ValueError, match=f"fusion_bytes must be a positive int .*, got {bad}"):
            collectives.GradSync(comm, fusion_bytes=bad)
    with pytest.raises(ValueError, match="needs compression"):
        collectives.GradSync(comm, error_feedback=True)
    with pytest.raises(ValueError, match="has no parameters that require grad"):
        collectives.GradSync(comm).attach(torch.nn.ReLU())
    sync = collectives.GradSync(comm).attach(torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="already attached"):
        sync.attach(torch.nn.Linear(2, 2))
    # which gradient is no array (a p.grad that is None; the seventy-sixth review)
    with pytest.raises(TypeError, match="^item 1 of 3: "):
        collectives.GradSync(comm).sync([torch.ones(2), None, torch.ones(2)])


def test_sync_layers_take_the_communicators_algorithm_unless_named(comm, monkeypatch):
    # COLLECTIVES_ALGORITHM is read into comm.settings at init; the layers must follow it
    monkeypatch.setattr(comm, "settings", dataclasses.replace(comm.settings, algorithm="torus2d"))
    model = torch.nn.Linear(2, 1)
    assert HookState(comm).algorithm == "torus2d"
    assert collectives.GradSync(comm).algorithm == "torus2d"
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, comm)
    assert opt.sync.algorithm == "torus2d"
    assert HookState(comm, algorithm="ring").algorithm == "ring"
    assert collectives.GradSync(comm, algorithm="ring").algorithm == "ring"


def test_gradsync_attach_waits_and_detaches(comm):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    sync = collectives.GradSync(comm, fusion_bytes=64).attach(model)
    model[1](torch.ones(1, 4)).sum().backward()  # the first layer gets no gradient
    sync.wait()  # no rank made it: None, as under DDP
    assert model[0].weight.grad is None and model[1].weight.grad is not None
    sync.detach()
    model(torch.ones(1, 3)).sum().backward()  # no hooks left: nothing launched, nothing raised
    sync.wait()


def test_broadcast_checks_root(comm):
    with pytest.raises(ValueError, match=r"root must be a rank in \[0, 1\), got 1"):
        collectives.broadcast_parameters([torch.zeros(2)], comm, root=1)


def test_distributed_optimizer_checks_and_delegates(comm):
    model = torch.nn.Linear(2, 1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        DistributedOptimizer(object(), model, comm)
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), model, comm)
    model(torch.ones(1, 2)).sum().backward()
    before = model.weight.detach().clone()
    opt.step()
    assert torch.equal(model.weight.detach(), before - 0.5)
    opt.zero_grad()
    assert model.weight.grad is None and opt.param_groups[0]["lr"] == 0.5


def test_training_matches_ddp_under_mpiexec():
    """DDP + hook, GradSync.attach, DistributedOptimizer == DDP after 30 steps; fp16 learns."""
    proc = run_workers(2, "torch_training", env={"OMP_NUM_THREADS": "1"})
    assert proc.stdout.count("size=2") == 2 and "transport=torch" not in proc.stdout


def test_example_trains_under_mpiexec():
    command = [mpiexec(), "-n", "2", sys.executable, "examples/train_ddp.py", "--steps", "3",
               "--algorithm", "ring"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "final loss" in proc.stdout and "size=2" in proc.stdout


def test_a_detach_interrupted_at_any_line_lets_the_module_be_attached_again(comm):
    """An interrupt inside detach() (after its hooks were removed) left the GradSync listed
    as attached: attach then refused the module as "attached to another GradSync", naming
    the one itself (the ninety-third review)."""
    from collectives import gradsync

    model = torch.nn.Linear(3, 3)
    for n in range(1, 30):
        sync = collectives.GradSync(comm).attach(model)
        interrupt_at_line(sync.detach, n, gradsync.__file__)
        if sync._hooks:  # (interrupted before the hooks went: detach again, as a user would)
            sync.detach()
        collectives.GradSync(comm).attach(model).detach()


def test_an_attach_interrupted_as_it_registers_hooks_leaves_none_behind(comm):
    """Hooks were kept only once all were registered: an interrupt before left hooks that
    detach() did not know, and a fresh GradSync then attached beside them (its second step
    failed as a missing wait(); the ninety-fifth review)."""
    import inspect

    from collectives import gradsync

    attach = collectives.GradSync.attach
    lines, first = inspect.getsourcelines(attach)
    start = first + next(i for i, line in enumerate(lines) if "hooks = self._hooks" in line)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    for n in range(1, 12):
        sync = collectives.GradSync(comm)
        interrupt_at_line(lambda: sync.attach(model), n, gradsync.__file__,
                          code=attach.__code__, from_line=start)
        sync.detach()
        fresh = collectives.GradSync(comm).attach(model)
        for _ in range(2):
            model(torch.ones(1, 3)).sum().backward()
            fresh.wait()
        fresh.detach()


def test_a_module_that_hides_parameters_from_named_parameters_is_waited_alike(comm):
    """A student hiding its teacher's parameters (which have gradients) from
    named_parameters: wait() walked the modules' own parameters, refused the teacher's and
    raised a bare StopIteration looking up its name (the ninety-fifth review)."""
    class Student(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 3)
            self.teacher = torch.nn.Linear(3, 3)

        def named_parameters(self, *args, **kwargs):
            return ((n, p) for n, p in super().named_parameters(*args, **kwargs)
                    if not n.startswith("teacher."))

        def forward(self, x):
            return self.head(x) + self.teacher(x)

    student = Student()
    sync = collectives.GradSync(comm).attach(student)
    student(torch.ones(1, 3)).sum().backward()
    sync.wait()
    sync.detach()


@pytest.mark.parametrize("tie", ["the same tensor", "overlapping views"])
def test_gradients_that_share_memory_across_buckets_are_refused_by_name(comm, tie):
    """Two parameters whose .grad share memory, in buckets of their own: bucket 0's in-place
    all-reduce ran while autograd added the other gradient into the same memory, and 8-16
    of 20 steps averaged wrongly with no error (the 110th review)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False),
                                torch.nn.Linear(4, 4, bias=False))
    sync = collectives.GradSync(comm, fusion_bytes=64).attach(model)
    flat = torch.zeros(24)
    if tie == "the same tensor":
        model[0].weight.grad = model[1].weight.grad = torch.zeros(4, 4)
    else:
        model[0].weight.grad, model[1].weight.grad = flat[:16].view(4, 4), flat[8:].view(4, 4)
    model(torch.ones(1, 4)).sum().backward()
    with pytest.raises(ValueError, match=r"the gradients of 1\.weight and 0\.weight share "
                                         "memory"):
        sync.wait()
    model[0].weight.grad = model[1].weight.grad = None  # the communicator is usable
    model(torch.ones(1, 4)).sum().backward()
    sync.wait()
    sync.detach()


def test_a_read_only_gradient_sharing_an_averaged_ones_memory_is_named_as_a_gradient(comm):
    """It said "arrays[0] and out[1] share memory" where no out was passed (the 110th
    review)."""
    w = np.ones(100, np.float32)
    read_only = w[:]
    read_only.flags.writeable = False
    for grads, pair in (([read_only, w], r"grads\[0\] and grads\[1\]"),
                        ([w, read_only], r"grads\[0\] and grads\[1\]")):
        with pytest.raises(ValueError, match=pair + " share memory"):
            collectives.GradSync(comm).sync(grads)
    both = collectives.GradSync(comm).sync([read_only, read_only])  # neither written: fine
    assert [float(g[0]) for g in both] == [1.0, 1.0]
