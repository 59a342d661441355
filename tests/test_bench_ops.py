"""bench.reference and bench.ops: the data, the closed-form checks, the factors, MPI's own calls.

The checks are held against the true result of each collective's contract, computed here
from every rank's input, and against corrupted results; MPI's own collectives (the `mpi`
column) run under mpiexec and must pass the same checks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bench import ops
from bench.ops.allreduce import AllReduce, AllReduceVariant
from bench.ops.base import DEFAULT
from bench.ops.baseline import MPI_BASELINE, Algorithm
from bench.reference import DTYPES, REDOPS, Expected, element_codes, rounding_eps, value_table
from tests.mpirun import ROOT, mpiexec

RING = AllReduceVariant("ring")


class _Pretend:
    """One rank of a pretend world: every collective of the library returns ``answer(name, x)``
    (into ``out`` when given), so a sample's check can be fed the truth or a corruption."""

    def __init__(self, rank, size, answer):
        self.rank, self.size, self._answer = rank, size, answer
        self.tuner = None

    def _call(self, name, x, out):
        result = self._answer(name, x)
        if out is None or result is None:
            return result
        out[...] = np.asarray(result).reshape(out.shape)
        return out

    def allreduce(self, x, op="sum", algorithm=None, out=None, **options):
        return self._call("allreduce", x, out)

    def reduce_scatter(self, x, op="sum", algorithm=None, out=None, deterministic=None):
        return self._call("reduce_scatter", x, out)

    def allgather(self, x, algorithm=None, out=None):
        return self._call("allgather", x, out)

    def broadcast(self, x, root=0, algorithm=None, out=None):
        return self._call("broadcast", x, out)

    def reduce(self, x, root=0, op="sum", algorithm=None, out=None, deterministic=None):
        return self._call("reduce", x, out)

    def alltoall(self, x, out=None):
        return self._call("alltoall", x, out)


def _make(name, comm, *, dtype, redop="sum", root=0):
    if name == "allreduce":
        return AllReduce(comm, None, dtype=dtype, redop=redop, algorithms=["ring"],
                         mpi_baseline=False)
    return ops.OTHERS[name](comm, None, dtype=dtype, redop=redop, root=root,
                            algorithms=[DEFAULT])


def _variant(name):
    return RING if name == "allreduce" else Algorithm(DEFAULT)


def _inputs(name, count, *, nranks, dtype, root=0):
    """Every rank's input as its sample hands it to the library."""
    seen = []
    for rank in range(nranks):
        comm = _Pretend(rank, nranks, lambda _, x: seen.append(np.array(x)) or None)
        _make(name, comm, dtype=dtype, root=root).setup(count).run(_variant(name))
    return seen


def _reduce(inputs, redop, dtype):
    """The reduction of the inputs as the library defines it (integer avg rounds down)."""
    stack = np.stack([x.astype(np.float64) for x in inputs])
    if redop in ("max", "min"):
        return getattr(stack, redop)(axis=0)
    total = stack.sum(axis=0)
    if redop != "avg":
        return total
    return total // len(inputs) if dtype.kind == "i" else total / len(inputs)


def _truth(name, inputs, rank, *, redop, dtype, root=0):
    """What ``rank`` must get from collective ``name`` (None: nothing)."""
    p = len(inputs)
    if name == "allreduce":
        return _reduce(inputs, redop, dtype)
    if name == "reduce_scatter":
        return np.array_split(_reduce(inputs, redop, dtype), p)[rank]
    if name == "allgather":
        return np.stack(inputs)
    if name == "broadcast":
        return inputs[root]
    if name == "reduce":
        return _reduce(inputs, redop, dtype) if rank == root else None
    return np.stack([inputs[r][rank] for r in range(p)])  # alltoall


def _wrong(name, answer, rank, nranks, count, *, dtype, redop="sum", root=0):
    comm = _Pretend(rank, nranks, answer)
    sample = _make(name, comm, dtype=dtype, redop=redop, root=root).setup(count)
    sample.run(_variant(name))
    return sample.wrong(_variant(name)), sample


# ---------------------------------------------------------------------------- the reference

def test_codes_do_not_repeat_at_split_offsets():
    codes = element_codes(1 << 16)
    assert codes.max() == 15 and codes.min() == 0
    for offset in (2, 4, 8, 1024, 1 << 15):
        assert np.count_nonzero(codes[:offset] != codes[offset:2 * offset]) > offset // 2


def test_rounding_eps_of_wire_formats():
    f32 = DTYPES["float32"]
    assert rounding_eps(f32, None) == np.finfo(np.float32).eps
    assert rounding_eps(f32, "fp16") == 2 * np.finfo(np.float16).eps
    assert rounding_eps(DTYPES["int64"], None) == 0.0


def test_expected_row_is_exact_and_counts_nan():
    table = value_table(3, integer=False)
    codes = element_codes(100)
    got = table[2][codes].copy()
    assert Expected.row(table, 2).wrong(got, codes) == 0
    got[[3, 50]] += 0.25
    got[7] = np.nan
    assert Expected.row(table, 2).wrong(got, codes) == 3
    integers = value_table(3, integer=True)
    got = integers[2][codes].astype(np.int64)
    got[:] = np.iinfo(np.int64).min  # its difference from 0 wrapped to itself, below 0
    assert Expected.row(integers, 2).wrong(got, codes) == 100


# ---------------------------------------------------------------------------- the checks

@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("redop", REDOPS)
@pytest.mark.parametrize("nranks", [1, 3, 8])
def test_allreduce_check_accepts_the_true_result(dtype, redop, nranks):
    dtype = DTYPES[dtype]
    truth = _truth("allreduce", _inputs("allreduce", 1000, nranks=nranks, dtype=dtype), 0,
                   redop=redop, dtype=dtype).astype(dtype)
    for rank in range(nranks):
        wrong, sample = _wrong("allreduce", lambda *_: truth, rank, nranks, 1000, dtype=dtype,
                               redop=redop)
        assert wrong == 0 and sample.nbytes == 1000 * dtype.itemsize


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_allreduce_check_counts_corruption(dtype):
    dtype = DTYPES[dtype]
    truth = _truth("allreduce", _inputs("allreduce", 5000, nranks=4, dtype=dtype), 0,
                   redop="sum", dtype=dtype)
    bad = truth.copy()
    bad[100:110] += 1       # a wrong value
    bad[4000:4100] = truth[3000:3100]  # a segment landed at the wrong offset
    if dtype.kind == "f":
        bad[7] = np.nan
    wrong, _ = _wrong("allreduce", lambda *_: bad.astype(dtype), 0, 4, 5000, dtype=dtype)
    expected = 10 + int(np.count_nonzero(truth[4000:4100] != truth[3000:3100]))
    expected += dtype.kind == "f"
    assert wrong == expected
    assert expected > 50  # the data does not repeat at that offset


def test_compressed_allreduce_allows_the_wire_rounding():
    dtype = DTYPES["float32"]
    truth = _truth("allreduce", _inputs("allreduce", 1000, nranks=3, dtype=dtype), 0,
                   redop="sum", dtype=dtype)
    off = (truth * (1 + 2e-3)).astype(dtype)  # within fp16's rounding, far beyond float32's
    for compression, wrong in ((None, True), ("fp16", False)):
        sample = AllReduce(_Pretend(0, 3, lambda *_: off), None, dtype=dtype, redop="sum",
                           algorithms=["ring"], compressions=(compression,),
                           mpi_baseline=False).setup(1000)
        variant = AllReduceVariant("ring", compression)
        sample.run(variant)
        assert (sample.wrong(variant) > 0) is wrong


def test_ranks_contribute_different_data():
    inputs = _inputs("allreduce", 256, nranks=4, dtype=DTYPES["int32"])
    assert all(not np.array_equal(inputs[0], other) for other in inputs[1:])
    assert np.abs(np.stack(inputs)).max() <= 8


OTHERS = list(ops.OTHERS)


@pytest.mark.parametrize("name", OTHERS)
@pytest.mark.parametrize("dtype", ["float32", "int64", "bfloat16"])
def test_other_collectives_accept_their_true_result(name, dtype):
    dtype, nranks, root = DTYPES[dtype], 3, 1
    count = _make(name, _Pretend(0, nranks, None), dtype=dtype).count(999 * dtype.itemsize)
    inputs = _inputs(name, count, nranks=nranks, dtype=dtype, root=root)
    for rank in range(nranks):
        truth = _truth(name, inputs, rank, redop="avg", dtype=dtype, root=root)
        answer = (lambda *_: None) if truth is None else (lambda *_: truth.astype(dtype))
        wrong, sample = _wrong(name, answer, rank, nranks, count, dtype=dtype, redop="avg",
                               root=root)
        assert wrong == 0, (name, rank)
        assert sample.nbytes == count * dtype.itemsize


@pytest.mark.parametrize("name", OTHERS)
def test_other_collectives_count_a_misplaced_block(name):
    dtype, nranks, count = DTYPES["float32"], 4, 4000
    inputs = _inputs(name, count, nranks=nranks, dtype=dtype)
    truth = _truth(name, inputs, 0, redop="sum", dtype=dtype).reshape(-1)
    bad = truth.copy()
    half = bad.size // 2
    bad[:half // 4] = truth[half:half + half // 4]  # a block at the wrong offset
    wrong, _ = _wrong(name, lambda *_: bad, 0, nranks, count, dtype=dtype)
    assert wrong == np.count_nonzero(bad != truth) > 20


@pytest.mark.parametrize("name", ["allreduce", *OTHERS])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bfloat16"])
def test_a_call_that_leaves_the_poisoned_output_alone_is_wrong(name, dtype):
    """After ``poison`` (the harness's, before each turn) a call returning ``out``
    unwritten is wrong everywhere: it kept the last call's right answer (the 84th review)."""
    dtype, nranks, rank = DTYPES[dtype], 3, 1
    root = rank if name == "reduce" else 0  # broadcast: off root, whose output is its input
    count = _make(name, _Pretend(0, nranks, None), dtype=dtype).count(999 * dtype.itemsize)
    truth = _truth(name, _inputs(name, count, nranks=nranks, dtype=dtype, root=root), rank,
                   redop="sum", dtype=dtype, root=root)
    wrong, sample = _wrong(name, lambda *_: truth.astype(dtype), rank, nranks, count,
                           dtype=dtype, root=root)
    assert wrong == 0
    comm = sample._comm if name == "allreduce" else sample.op.comm
    comm._call = lambda name, x, out: out
    sample.poison()
    sample.run(_variant(name))
    assert sample.wrong(_variant(name)) == truth.size


def test_reduce_counts_output_off_root():
    dtype = DTYPES["float32"]
    wrong, _ = _wrong("reduce", lambda _, x: x, 1, 3, 30, dtype=dtype)
    assert wrong == 30


# ---------------------------------------------------------------------------- factors, names

@pytest.mark.parametrize("name, p, factor", [
    ("allreduce", 1, 0.0), ("allreduce", 4, 1.5), ("allreduce", 16, 1.875),
    ("reduce_scatter", 4, 0.75), ("allgather", 8, 0.875), ("alltoall", 2, 0.5),
    ("broadcast", 8, 1.0), ("reduce", 8, 1.0),
])
def test_bus_factors_are_nccl_tests(name, p, factor):
    op = _make(name, _Pretend(0, p, None), dtype=DTYPES["float32"])
    assert op.bus_factor(p) == pytest.approx(factor)


@pytest.mark.parametrize("name, nodes, factor", [
    ("allreduce", (2, 2), 1.0), ("allreduce", (2, 2, 2, 2), 1.5), ("allreduce", (3, 2), 1.0),
    ("reduce_scatter", (2, 2), 0.5), ("allgather", (3, 2), 0.6), ("broadcast", (4, 4), 1.0),
    ("alltoall", (2, 2), 1.0), ("alltoall", (1, 1, 1, 1), 0.75),
])
def test_link_factors_count_what_a_node_link_carries(name, nodes, factor):
    op = _make(name, _Pretend(0, sum(nodes), None), dtype=DTYPES["float32"])
    assert op.link_factor(nodes) == pytest.approx(factor)


def test_block_collectives_round_counts_to_whole_blocks():
    f32 = DTYPES["float32"]
    assert _make("allgather", _Pretend(0, 3, None), dtype=f32).count(40) == 9
    assert _make("broadcast", _Pretend(0, 3, None), dtype=f32).count(40) == 10
    assert AllReduce(_Pretend(0, 3, None), None, dtype=DTYPES["float64"], redop="sum",
                     algorithms=["ring"], mpi_baseline=False).count(12) == 1


def test_algorithm_names_per_collective():
    known = ("auto", "native", "ring")
    assert ops.algorithms_for("allreduce", "all", known) == known
    assert ops.algorithms_for("allreduce", "mpi", known) == ()
    assert ops.algorithms_for("allgather", "native,default", known) == ("native", "default")
    alltoall = ops.library_algorithms("alltoall")
    assert ops.algorithms_for("alltoall", "all", alltoall) == ("auto", "native", "pairwise",
                                                                DEFAULT)
    for collective, text in (("allreduce", "default"), ("alltoall", "ring"), ("reduce", "x,")):
        with pytest.raises(ValueError, match=f"unknown algorithms for {collective}"):
            ops.algorithms_for(collective, text, ops.library_algorithms(collective))


def test_each_collective_offers_the_library_s_own_algorithms():
    assert ops.library_algorithms("broadcast") == ("auto", "native", "tree", "scatter_allgather")
    assert "halving_doubling" in ops.library_algorithms("reduce_scatter")


# ---------------------------------------------------------------------------- MPI's own, checked

_MPI_SWEEP = textwrap.dedent('''
    """Every op's mpi column at a few sizes, dtypes and reductions; rank 0 prints the #wrong."""
    import json
    import numpy as np
    from mpi4py import MPI
    import collectives
    from bench import harness, ops
    from bench.ops.allreduce import AllReduce
    from bench.reference import DTYPES

    mpi_comm = MPI.COMM_WORLD
    comm = collectives.init(mpi_comm=mpi_comm)
    options = harness.SweepOptions(sizes=(8, 1000, 1 << 16), iters=1, warmup=0)
    wrong = {}
    for dtype in ("float16", "bfloat16", "float32", "int64"):
        for redop in ("sum", "avg", "max"):
            made = [AllReduce(comm, mpi_comm, dtype=DTYPES[dtype], redop=redop, algorithms=())]
            made += [op(comm, mpi_comm, dtype=DTYPES[dtype], redop=redop, root=1, algorithms=())
                     for op in ops.OTHERS.values()]
            for op in made:
                rows = [row for line in harness.sweep(mpi_comm, op, options=options) for row in line]
                wrong[f"{op.name} {dtype} {redop}"] = [(row.label, row.size, row.wrong) for row in rows]
    if mpi_comm.rank == 0:
        print(json.dumps(wrong))
''')


def test_mpi_columns_of_every_collective_pass_the_checks(tmp_path):
    script = tmp_path / "mpi_sweep.py"
    script.write_text(_MPI_SWEEP)
    proc = subprocess.run([mpiexec(), "-n", "3", sys.executable, str(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wrong = json.loads(proc.stdout)
    assert len(wrong) == 4 * 3 * 6
    cells = [cell for rows in wrong.values() for cell in rows]
    assert {label for label, _, _ in cells} == {MPI_BASELINE}
    assert {size for _, size, _ in cells} >= {8, 996, 1 << 16}  # block ops round to whole blocks
    assert all(count == 0 for _, _, count in cells), [k for k, v in wrong.items() if any(c[2] for c in v)]
