"""bench: sizes, bandwidth math, the all-reduce check, table, self-launch, end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench import harness, launch
from bench.allreduce_perf import DTYPES, REDOPS, AllReduce, AlgorithmVariant, build_parser

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("text, nbytes", [
    ("8", 8), ("1K", 1024), ("16M", 16 << 20), ("256M", 256 << 20), ("1G", 1 << 30),
    ("4k", 4096), ("2MB", 2 << 20), ("3KiB", 3072), (" 64 ", 64),
])
def test_parse_size(text, nbytes):
    assert harness.parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "M", "1.5M", "-8", "8X", "1MM"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="not a size"):
        harness.parse_size(text)


def test_size_steps_factor_and_increment():
    assert harness.size_steps(min_bytes=8, max_bytes=256, factor=2) == (8, 16, 32, 64, 128, 256)
    assert harness.size_steps(min_bytes=8, max_bytes=100, factor=4) == (8, 32)
    assert harness.size_steps(min_bytes=1024, max_bytes=4096, increment=1024) == (
        1024, 2048, 3072, 4096)
    assert harness.size_steps(min_bytes=64, max_bytes=64, factor=2) == (64,)


@pytest.mark.parametrize("kwargs", [
    {"min_bytes": 8, "max_bytes": 64},
    {"min_bytes": 8, "max_bytes": 64, "factor": 2, "increment": 8},
    {"min_bytes": 0, "max_bytes": 64, "factor": 2},
    {"min_bytes": 128, "max_bytes": 64, "factor": 2},
    {"min_bytes": 8, "max_bytes": 64, "factor": 1},
    {"min_bytes": 8, "max_bytes": 64, "increment": 0},
])
def test_size_steps_rejects(kwargs):
    with pytest.raises(ValueError):
        harness.size_steps(**kwargs)


@pytest.mark.parametrize("nbytes, text", [
    (8, "8 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (4 << 20, "4 MiB"),
    (256 << 20, "256 MiB"), (2 << 30, "2 GiB"),
])
def test_format_size(nbytes, text):
    assert harness.format_size(nbytes) == text


def test_command_line_sizes():
    parser = build_parser()
    options = harness.sweep_options(parser.parse_args(["-b", "1M", "-e", "64M", "-f", "4"]))
    assert options.sizes == (1 << 20, 4 << 20, 16 << 20, 64 << 20)
    options = harness.sweep_options(parser.parse_args(["-b", "1K", "-e", "3K", "-i", "1K",
                                                       "-n", "3", "-w", "0", "-c", "0"]))
    assert options == harness.SweepOptions(sizes=(1024, 2048, 3072), iters=3, warmup=0,
                                           check=False)
    defaults = parser.parse_args([])
    assert harness.sweep_options(defaults).sizes[0] == 8
    assert harness.sweep_options(defaults).sizes[-1] == 256 << 20
    assert (defaults.np, defaults.algorithms, defaults.dtype, defaults.op) == (
        2, "ring,native", "float32", "sum")
    assert parser.parse_args(["-d", "half"]).dtype == "float16"


# ---------------------------------------------------------------------------- bandwidth

@pytest.mark.parametrize("nranks, factor", [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75), (16, 1.875)])
def test_allreduce_bus_factor(nranks, factor):
    op = AllReduce(None, dtype=DTYPES["float32"], redop="sum", algorithms=["ring"])
    assert op.bus_factor(nranks) == pytest.approx(factor)
    assert op.bus_factor(nranks) == pytest.approx(2 * (nranks - 1) / nranks)


def test_bandwidth():
    # 1 GB in 0.5 s is 2 GB/s; on 4 ranks an all-reduce's links carry 1.5 times that.
    assert harness.bandwidth(10**9, 0.5, 1.5) == pytest.approx((2.0, 3.0))
    assert harness.bandwidth(64 << 20, 0.01, 1.0) == pytest.approx((6.7108864, 6.7108864))
    assert harness.bandwidth(8, 0.0, 1.0) == (0.0, 0.0)


def test_allreduce_counts():
    op = AllReduce(None, dtype=DTYPES["float64"], redop="sum", algorithms=["ring"])
    assert [op.count(n) for n in (4, 8, 12, 1024)] == [0, 1, 1, 128]
    assert op.fields() == {"type": "float64", "redop": "sum"}


# ---------------------------------------------------------------------------- the all-reduce check

RING = AlgorithmVariant("ring")


class _ReferenceComm:
    """One rank of a pretend world: its all-reduce writes ``answer(x)`` into ``out``."""

    def __init__(self, rank, size, answer):
        self.rank, self.size, self._answer = rank, size, answer

    def allreduce(self, x, op, algorithm, out):
        out[...] = self._answer(x)


def _sample(rank, nranks, answer, *, dtype, redop="sum", count=1000):
    return AllReduce(_ReferenceComm(rank, nranks, answer), dtype=dtype, redop=redop,
                     algorithms=["ring"]).setup(count)


def _inputs(count, *, nranks, dtype):
    """Every rank's input vector as the samples hand it to the library, in float64."""
    inputs = []
    for rank in range(nranks):
        _sample(rank, nranks, lambda x: inputs.append(x.copy()) or x, dtype=dtype,
                count=count).run(RING)
    return np.stack(inputs).astype(np.float64)


def _numpy_allreduce(count, *, nranks, dtype, redop):
    """The true all-reduce of the bench's data, computed from every rank's input."""
    inputs = _inputs(count, nranks=nranks, dtype=dtype)
    if redop == "max":
        return inputs.max(axis=0)
    if redop == "min":
        return inputs.min(axis=0)
    total = inputs.sum(axis=0)
    if redop == "avg":
        return total // nranks if dtype.kind == "i" else total / nranks
    return total


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("redop", REDOPS)
@pytest.mark.parametrize("nranks", [1, 3, 8])
def test_allreduce_check_accepts_the_true_result(dtype, redop, nranks):
    dtype = DTYPES[dtype]
    truth = _numpy_allreduce(1000, nranks=nranks, dtype=dtype, redop=redop).astype(dtype)
    for rank in range(nranks):
        sample = _sample(rank, nranks, lambda x: truth, dtype=dtype, redop=redop)
        sample.run(RING)
        assert sample.wrong(RING) == 0
        assert sample.nbytes == 1000 * dtype.itemsize


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_allreduce_check_counts_corruption(dtype):
    dtype = DTYPES[dtype]
    truth = _numpy_allreduce(5000, nranks=4, dtype=dtype, redop="sum")
    bad = truth.copy()
    bad[100:110] += 1       # a wrong value
    bad[4000:4100] = truth[3000:3100]  # a segment landed at the wrong offset
    if dtype.kind == "f":
        bad[7] = np.nan
    sample = _sample(0, 4, lambda x: bad.astype(dtype), dtype=dtype, count=5000)
    sample.run(RING)
    expected = 10 + int(np.count_nonzero(truth[4000:4100] != truth[3000:3100]))
    expected += dtype.kind == "f"
    assert sample.wrong(RING) == expected
    assert expected > 50  # the data does not repeat at that offset


def test_ranks_contribute_different_data():
    inputs = _inputs(256, nranks=4, dtype=DTYPES["int32"])
    assert all(not np.array_equal(inputs[0], other) for other in inputs[1:])
    assert np.abs(inputs).max() <= 8


# ---------------------------------------------------------------------------- harness, generically

class _SoloComm:
    """A one-rank stand-in for an mpi4py communicator."""

    rank, size = 0, 1

    def Barrier(self):
        pass

    def allgather(self, value):
        return [value]


class _Label:
    def __init__(self, label):
        self.label = label

    def fields(self):
        return {"kind": self.label}


class _CountingOp:
    """A toy op that records its calls: checks the harness uses only the op contract."""

    name = "toy"

    def __init__(self):
        self.log = []

    def variants(self):
        return [_Label("a"), _Label("b")]

    def fields(self):
        return {"type": "toy"}

    def count(self, nbytes):
        return nbytes // 4

    def bus_factor(self, nranks):
        return 1.5

    def setup(self, count):
        log = self.log
        log.append(("setup", count))

        class _Sample:
            nbytes = count * 4

            def run(self, variant):
                log.append(("run", count, variant.label))

            def wrong(self, variant):
                return 1 if variant.label == "b" else 0

            def result(self):
                return np.zeros(count, np.float32)

        return _Sample()


def test_sweep_interleaves_variants_per_size():
    op = _CountingOp()
    options = harness.SweepOptions(sizes=(2, 4, 5, 8), iters=3, warmup=2)
    steps = []

    def progress(done, total, what):
        steps.append((done, total, what))

    lines = list(harness.sweep(_SoloComm(), op, options=options, progress=progress))
    # 2 B is below one element and 5 B repeats 4 B's count: both skipped.
    assert [[(row.size, row.count, row.label) for row in line] for line in lines] == [
        [(4, 1, "a"), (4, 1, "b")], [(8, 2, "a"), (8, 2, "b")]]
    assert steps == [(1, 4, "4 B a"), (2, 4, "4 B b"), (3, 4, "8 B a"), (4, 4, "8 B b")]
    runs = [entry for entry in op.log if entry[0] == "run"]
    assert runs == [("run", 1, "a")] * 5 + [("run", 1, "b")] * 5 + [("run", 2, "a")] * 5 + [
        ("run", 2, "b")] * 5
    row = lines[0][1]
    assert row.wrong == 1 and row.busbw == pytest.approx(1.5 * row.algbw)
    assert row.as_json() == {"size": 4, "count": 1, "type": "toy", "kind": "b",
                             "time_us": row.time_us, "algbw": row.algbw, "busbw": row.busbw,
                             "wrong": 1}


def test_sweep_without_check():
    options = harness.SweepOptions(sizes=(16,), iters=1, warmup=0, check=False)
    (line,) = harness.sweep(_SoloComm(), _CountingOp(), options=options)
    assert [row.wrong for row in line] == [None, None]


def _row(size, label, busbw, wrong=0):
    return harness.Row(size=size, count=size // 4, label=label, fields={}, time_us=1234.5678,
                       algbw=busbw / 2, busbw=busbw, wrong=wrong)


def test_table_is_aligned():
    header = harness.table_header(["ring", "native"])
    lines = [harness.table_line([_row(size, "ring", 1.5), _row(size, "native", 12.25, None)])
             for size in (8, 1 << 20, 256 << 20)]
    assert len(header) == 3
    assert "ring" in header[0] and "native" in header[0]
    assert header[1].split() == ["#", "size", "count", "|", "time", "algbw", "busbw", "#wrong", "|",
                                 "time", "algbw", "busbw", "#wrong"]
    assert {len(line) for line in lines} == {len(header[1])}
    bars = {i for i, ch in enumerate(header[1]) if ch == "|"}
    for line in lines + header[::2]:
        assert {i for i, ch in enumerate(line) if ch == "|"} == bars
    assert lines[1].split() == ["1048576", "262144", "|", "1234.6", "0.75", "1.50", "0", "|",
                                "1234.6", "6.12", "12.25", "N/A"]


def test_summary_ratios_against_baseline():
    rows = []
    for size, ring, native in ((1 << 20, 1.0, 2.0), (4 << 20, 3.0, 3.0), (16 << 20, 4.0, 2.0)):
        rows += [_row(size, "ring", ring), _row(size, "native", native)]
    lines = harness.summary_lines(rows, labels=["ring", "native"], baseline="native")
    assert lines[0].split() == ["#", "ring", "avg", "busbw", "2.67", "GB/s", "ring/native",
                                "busbw", "at", "1", "MiB", "0.50x,", "16", "MiB", "2.00x"]
    assert lines[1].split() == ["#", "native", "avg", "busbw", "2.33", "GB/s"]
    assert lines[2] == "# #wrong total: 0 OK"


def test_summary_uses_largest_size_without_probe_sizes_and_flags_wrong():
    rows = [_row(64, "ring", 1.0, wrong=3), _row(64, "native", 4.0), _row(512, "ring", 1.0),
            _row(512, "native", 0.5)]
    lines = harness.summary_lines(rows, labels=["ring", "native"], baseline="native")
    assert lines[0].endswith("ring/native busbw at 512 B 2.00x")
    assert lines[-1] == "# #wrong total: 3 FAILED"
    assert len(harness.summary_lines(rows, labels=["ring", "native"])) == 3


def test_progress_lines_and_redraw():
    class Stream(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    plain, tty = Stream(), Stream()
    for stream, redraw in ((plain, False), (tty, True)):
        progress = harness.Progress(stream=stream, redraw=redraw)
        progress(1, 1, "alone")
        progress(12, 24, "4 MiB ring")
        progress.close()
    assert plain == ["[12/24] 4 MiB ring\n"]
    assert tty == ["\r\033[K[12/24] 4 MiB ring\r", "\r\033[K"]


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "out.json"
    harness.write_json(str(path), {"rows": [1, 2]})
    assert json.loads(path.read_text()) == {"rows": [1, 2]}
    assert list(tmp_path.iterdir()) == [path]


# ---------------------------------------------------------------------------- launching

def test_under_launcher():
    assert not launch.under_launcher({"HOME": "/root"})
    for name in launch.LAUNCHER_VARIABLES:
        assert launch.under_launcher({name: "0"})
    assert launch.under_launcher({"COLLECTIVES_BENCH_LAUNCHED": "1"})


def test_launch_command(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'HYDRA build details: Version: 4.2.0'\n")
    fake.chmod(0o755)
    command, environ = launch.launch_command(module="bench.allreduce_perf",
                                             argv=["-b", "8", "--np", "3"], nranks=3,
                                             mpiexec=str(fake))
    assert command == [str(fake), "-n", "3", sys.executable, "-m", "bench.allreduce_perf",
                       "-b", "8", "--np", "3"]
    assert launch.under_launcher(environ)


def test_launch_command_open_mpi(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'mpiexec (Open MPI) 5.0.3'\n")
    fake.chmod(0o755)
    command, environ = launch.launch_command(module="m", argv=[], nranks=2, mpiexec=str(fake))
    assert command[:4] == [str(fake), "-n", "2", "--oversubscribe"]
    assert environ["OMPI_ALLOW_RUN_AS_ROOT"] == environ["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"


def test_find_mpiexec_prefers_the_venv():
    beside = Path(sys.executable).parent / "mpiexec"
    if not beside.exists():
        pytest.skip("no mpiexec beside this Python")
    assert launch.find_mpiexec() == str(beside)


# ---------------------------------------------------------------------------- end to end

def _self_launch_env(**extra):
    """This environment minus any MPI launcher's variables, so the bench launches itself."""
    env = {key: value for key, value in os.environ.items()
           if key not in launch.LAUNCHER_VARIABLES and not key.startswith("COLLECTIVES_BENCH_")}
    return {**env, **extra}


def _bench(args, *, cwd, env):
    try:
        launch.find_mpiexec()
    except FileNotFoundError:
        pytest.skip("no mpiexec")
    return subprocess.run([sys.executable, "-m", "bench.allreduce_perf", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_end_to_end_two_ranks(tmp_path):
    out = tmp_path / "bench.json"
    proc = _bench(["--np", "2", "-b", "8", "-e", "64K", "-f", "8", "-n", "2", "-w", "1",
                   "--algorithms", "ring,native", "--json", str(out)],
                  cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(out.read_text())
    rows = document["rows"]
    sizes = [8, 64, 512, 4096, 32768]
    assert [(row["size"], row["algorithm"]) for row in rows] == [
        (size, algorithm) for size in sizes for algorithm in ("ring", "native")]
    for row in rows:
        assert row["count"] == row["size"] // 4
        assert (row["type"], row["redop"], row["wrong"]) == ("float32", "sum", 0)
        assert row["time_us"] > 0 and row["busbw"] == pytest.approx(row["algbw"])
    assert document["environment"]["nranks"] == 2
    assert document["config"]["dtype"] == "float32"
    table = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert [int(line.split()[0]) for line in table] == sizes
    assert "# #wrong total: 0 OK" in proc.stdout
    assert "[10/10] 32 KiB native" in proc.stderr


_BROKEN_LIBRARY = textwrap.dedent('''
    """A stand-in whose ring gives rank 1 three wrong elements."""
    from mpi4py import MPI

    ALGORITHMS = ("ring", "native")


    class _Comm:
        def __init__(self, comm):
            self._comm, self.rank, self.size = comm, comm.rank, comm.size

        def allreduce(self, x, op="sum", algorithm="auto", compression=None, out=None):
            self._comm.Allreduce(x, out, op=MPI.SUM)
            if algorithm == "ring" and self.rank == 1:
                out[:3] += 1
            return out


    def init(mpi_comm=None):
        return _Comm(mpi_comm)
''')


def test_end_to_end_counts_wrong_elements(tmp_path):
    (tmp_path / "collectives").mkdir()
    (tmp_path / "collectives" / "__init__.py").write_text(_BROKEN_LIBRARY)
    out = tmp_path / "bench.json"
    proc = _bench(["--np", "2", "-b", "64", "-e", "64", "-n", "1", "-w", "0", "--json", str(out)],
                  cwd=tmp_path, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    wrong = {row["algorithm"]: row["wrong"] for row in json.loads(out.read_text())["rows"]}
    assert wrong == {"ring": 3, "native": 0}
    assert "# #wrong total: 3 FAILED" in proc.stdout


def test_unknown_algorithm_is_refused(tmp_path):
    proc = _bench(["--np", "2", "-b", "8", "-e", "8", "--algorithms", "ring,bogus"],
                  cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2
    assert "unknown algorithms: bogus; choose from" in proc.stderr
