"""bench: sizes, bandwidth math, the harness, the table, self-launch, end to end.

The ops' data and checks are tests/test_bench_ops.py's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from bench import environment, harness, launch, table
from bench.allreduce_perf import build_parser
from bench.sizes import format_size, parse_size, size_steps

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("text, nbytes", [
    ("8", 8), ("1K", 1024), ("16M", 16 << 20), ("256M", 256 << 20), ("1G", 1 << 30),
    ("4k", 4096), ("2MB", 2 << 20), ("3KiB", 3072), (" 64 ", 64),
])
def test_parse_size(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "M", "1.5M", "-8", "8X", "1MM"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_size_steps_factor_and_increment():
    assert size_steps(min_bytes=8, max_bytes=256, factor=2) == (8, 16, 32, 64, 128, 256)
    assert size_steps(min_bytes=8, max_bytes=100, factor=4) == (8, 32)
    assert size_steps(min_bytes=1024, max_bytes=4096, increment=1024) == (
        1024, 2048, 3072, 4096)
    assert size_steps(min_bytes=64, max_bytes=64, factor=2) == (64,)


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
        size_steps(**kwargs)


@pytest.mark.parametrize("nbytes, text", [
    (8, "8 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (4 << 20, "4 MiB"),
    (256 << 20, "256 MiB"), (2 << 30, "2 GiB"),
])
def test_format_size(nbytes, text):
    assert format_size(nbytes) == text


def test_command_line_sizes():
    parser = build_parser()
    options = harness.sweep_options(parser.parse_args(["-b", "1M", "-e", "64M", "-f", "4"]))
    assert options.sizes == (1 << 20, 4 << 20, 16 << 20, 64 << 20)
    options = harness.sweep_options(parser.parse_args(["-b", "1K", "-e", "3K", "-i", "1K",
                                                       "-n", "3", "-w", "0", "-c", "0"]))
    assert options == harness.SweepOptions(sizes=(1024, 2048, 3072), iters=3, warmup=0,
                                           check=False)
    assert harness.sweep_options(parser.parse_args(["--repeat", "3"])).repeat == 3
    defaults = parser.parse_args([])
    assert harness.sweep_options(defaults).sizes[0] == 8
    assert harness.sweep_options(defaults).sizes[-1] == 256 << 20
    assert (defaults.np, defaults.algorithms, defaults.dtype, defaults.op, defaults.collective,
            defaults.columns) == (2, None, "float32", "sum", "allreduce", None)
    assert parser.parse_args(["-d", "half"]).dtype == "float16"
    assert parser.parse_args(["--columns", "time,wrong"]).columns == "time,wrong"


# ---------------------------------------------------------------------------- bandwidth

def test_bandwidth():
    # 1 GB in 0.5 s is 2 GB/s; on 4 ranks an all-reduce's links carry 1.5 times that.
    assert harness.bandwidth(10**9, 0.5, 1.5) == pytest.approx((2.0, 3.0))
    assert harness.bandwidth(64 << 20, 0.01, 1.0) == pytest.approx((6.7108864, 6.7108864))
    assert harness.bandwidth(8, 0.0, 1.0) == (0.0, 0.0)


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
    replicated = True

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

    def link_factor(self, ranks_per_node):
        return 2.0 * len(ranks_per_node)

    def predict(self, variant, nbytes):
        return None if variant.label == "a" else nbytes * 1e-6

    def setup(self, count):
        log = self.log
        log.append(("setup", count))

        class _Sample:
            nbytes = count * 4

            def run(self, variant):
                log.append(("run", count, variant.label))

            def poison(self):
                pass

            def wrong(self, variant):
                log.append(("check", count, variant.label))
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
                             "wrong": 1, "time_us_runs": [row.time_us],
                             "predicted_time_us": None, "inter_node_busbw": None}


def test_repeats_take_turns_and_keep_the_median():
    op = _CountingOp()
    options = harness.SweepOptions(sizes=(4,), iters=1, warmup=0, repeat=3)
    steps = []
    (line,) = harness.sweep(_SoloComm(), op, options=options,
                            progress=lambda done, total, what: steps.append(what))
    # one call and its check per turn; each turn starts one place further down the list
    assert [entry[2] for entry in op.log if entry[0] in ("run", "check")] == [
        "a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    assert steps[:4] == ["4 B a (turn 1/3)", "4 B b (turn 1/3)", "4 B b (turn 2/3)",
                         "4 B a (turn 2/3)"]
    for row in line:
        assert len(row.runs_us) == 3 and row.time_us == sorted(row.runs_us)[1]


def test_sweep_without_check():
    options = harness.SweepOptions(sizes=(16,), iters=1, warmup=0, check=False)
    (line,) = harness.sweep(_SoloComm(), _CountingOp(), options=options)
    assert [row.wrong for row in line] == [None, None]


class _SharedOutputOp(_CountingOp):
    """Two variants writing one output buffer: ``a`` the right answer, ``b`` nothing."""

    def setup(self, count):
        out = np.empty(count, np.float32)

        class _Sample:
            nbytes = count * 4

            def run(self, variant):
                if variant.label == "a":
                    out[:] = 1.0

            def poison(self):
                out.fill(np.nan)

            def wrong(self, variant):
                return int(np.count_nonzero(out != 1.0))

            def result(self):
                return out

        return _Sample()


def test_a_call_that_never_writes_its_output_is_wrong():
    """The output is poisoned before each turn: ``b`` inherited ``a``'s right answer and
    passed #wrong (the eighty-fourth review; nccl-tests fills it before its check too)."""
    options = harness.SweepOptions(sizes=(16,), iters=2, warmup=1, repeat=2)
    (line,) = harness.sweep(_SoloComm(), _SharedOutputOp(), options=options)
    assert [(row.label, row.wrong) for row in line] == [("a", 0), ("b", 4)]


def test_run_refuses_an_op_without_variants():
    """An op with no column group was a ZeroDivisionError in the sweep (the 84th review)."""
    op = _CountingOp()
    op.variants = list
    with pytest.raises(ValueError, match="nothing to measure: the toy op offers no variants"):
        harness.run(_SoloComm(), op, options=harness.SweepOptions(sizes=(16,)), command="toy",
                    config={}, env={"host": "here"})


def test_rows_are_held_against_the_model_and_the_nodes():
    op = _CountingOp()
    rows = [_row(1000, "a", 1.0), _row(1000, "b", 1.0)]
    one = harness.held_against(rows, op, ranks_per_node=(4,))
    assert [(row.predicted_us, row.inter_node_busbw) for row in one] == [(None, None),
                                                                        (1000.0, None)]
    two = harness.held_against(rows, op, ranks_per_node=(2, 2))
    assert [row.inter_node_busbw for row in two] == [2.0, 2.0]  # algbw 0.5 x link factor 4


def _row(size, label, busbw, wrong=0, time_us=1234.5678):
    return harness.Row(size=size, count=size // 4, label=label, fields={}, time_us=time_us,
                       algbw=busbw / 2, busbw=busbw, wrong=wrong, predicted_us=1000.0)


def _layout(columns=None, sizes=(8, 1 << 20), multi_node=False, link=None):
    return table.layout(columns, sizes=sizes, baseline="mpi", multi_node=multi_node, link=link)


def test_layouts_by_size_and_by_name():
    names = lambda layout: [cell.key for cell in layout.cells]  # noqa: E731
    assert names(_layout(sizes=(8, 64 << 10))) == ["time", "pred", "ratio", "wrong"]
    assert names(_layout()) == ["time", "pred", "busbw", "wrong"]
    assert names(_layout(multi_node=True)) == ["time", "pred", "busbw", "node", "wrong"]
    assert names(_layout("wide")) == ["time", "pred", "ratio", "algbw", "busbw", "wrong"]
    assert names(_layout("time,algbw,busbw,wrong")) == ["time", "algbw", "busbw", "wrong"]
    assert names(table.layout("latency", sizes=(8,), baseline=None, multi_node=False,
                              link=None)) == ["time", "pred", "wrong"]
    for bad in ("", "time,speed", "narrow"):
        with pytest.raises(ValueError, match="unknown columns"):
            table.parse_columns(bad)


def test_table_is_aligned():
    layout = _layout("time,algbw,busbw,wrong")
    header = layout.header(["ring", "native"])
    lines = [layout.line([_row(size, "ring", 1.5), _row(size, "native", 12.25, None)])
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


def test_cells_too_wide_for_their_column_never_run_together():
    """A time of 81412.7 us beside a prediction of 1200000.0 read as one number, and a
    prediction of 1e300 printed 300 digits (the sixty-ninth review): a number too wide for
    its cell takes a shorter form, and every cell keeps a space before it."""
    layout = _layout("wide")
    huge = harness.Row(size=1 << 27, count=1 << 25, label="native", fields={},
                       time_us=81412.712, algbw=1.65, busbw=1.65, wrong=12345678,
                       predicted_us=1.2e6)
    cells = layout.line([huge, _row(1 << 27, "mpi", 1.0, time_us=0.5)]).split("|")[1].split()
    assert len(cells) == 6, cells  # (no node column on one node)
    time, pred, ratio, *_, wrong = cells
    assert float(time) == pytest.approx(81412.7) and float(pred) == pytest.approx(1.2e6)
    assert float(ratio) == pytest.approx(162825.4, rel=1e-3) and wrong == "12345678"
    absurd = harness.Row(size=8, count=2, label="native", fields={}, time_us=1.0, algbw=0.0,
                         busbw=0.0, wrong=0, predicted_us=1e300)
    cells = layout.line([absurd]).split("|")[1].split()
    assert cells[1] == "1e+300", cells


def test_latency_line_gives_time_against_the_baseline():
    layout = _layout(sizes=(8, 64))  # sizes below 1 MiB: the latency layout
    line = layout.line([_row(64, "mpi", 1.0, time_us=10.0), _row(64, "ring", 1.0, time_us=25.0)])
    assert line.split() == ["64", "16", "|", "10.0", "1000.0", "1.00", "0", "|", "25.0",
                            "1000.0", "2.50", "0"]
    assert layout.header(["mpi", "ring"])[2].split()[4:7] == ["(us)", "(us)", "(xbase)"]


def test_link_bound_column_and_node_bw():
    bound = table.LinkBound(125e6, 1.0)  # 1gbit, 2 nodes
    layout = _layout(multi_node=True, link=bound)
    row = harness.Row(size=1 << 20, count=1 << 18, label="ring", fields={}, time_us=9000.0,
                      algbw=0.1165, busbw=0.1748, wrong=0, inter_node_busbw=0.1165)
    assert layout.line([row]).split() == ["1048576", "262144", "8388.6", "|", "9000.0", "-",
                                          "0.17", "0.117", "0"]
    assert layout.header(["ring"])[1].split()[:4] == ["#", "size", "count", "bound"]
    assert bound.as_json()["inter_node_busbw"] == 0.125


def test_summary_ratios_against_baseline():
    rows = []
    for size, ring, native in ((1 << 20, 1.0, 2.0), (4 << 20, 3.0, 3.0), (16 << 20, 4.0, 2.0)):
        rows += [_row(size, "ring", ring), _row(size, "native", native)]
    lines = table.summary_lines(rows, labels=["ring", "native"], baseline="native")
    assert lines[0].split() == ["#", "ring", "avg", "busbw", "2.67", "GB/s", "ring/native",
                                "busbw", "at", "1", "MiB", "0.50x,", "16", "MiB", "2.00x"]
    assert lines[1].split() == ["#", "native", "avg", "busbw", "2.33", "GB/s"]
    assert lines[2] == "# #wrong total: 0 OK"


def test_summary_without_probe_sizes_uses_the_ends_and_flags_wrong():
    rows = [_row(64, "ring", 1.0, wrong=3), _row(64, "mpi", 4.0), _row(512, "ring", 1.0),
            _row(512, "mpi", 0.5)]
    lines = table.summary_lines(rows, labels=["ring", "mpi"], baseline="mpi")
    assert lines[0].endswith("ring/mpi busbw at 64 B 0.25x, 512 B 2.00x")
    assert lines[-1] == "# #wrong total: 3 FAILED"
    assert len(table.summary_lines(rows, labels=["ring", "mpi"])) == 3


def test_progress_lines_and_redraw():
    class Stream(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    plain, tty = Stream(), Stream()
    for stream, redraw in ((plain, False), (tty, True)):
        progress = table.Progress(stream=stream, redraw=redraw)
        progress(1, 1, "alone")
        progress(12, 24, "4 MiB ring")
        progress.close()
    assert plain == ["[12/24] 4 MiB ring\n"]
    assert tty == ["\r\033[K[12/24] 4 MiB ring\r", "\r\033[K"]


def test_progress_writes_a_step_per_interval_and_the_last():
    class Stream(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    now = [0.0]
    stream = Stream()
    progress = table.Progress(stream=stream, redraw=False, interval=1.0, clock=lambda: now[0])
    for step in range(1, 11):
        progress(step, 10, f"step {step}")
        now[0] += 0.3
    assert stream == ["[1/10] step 1\n", "[5/10] step 5\n", "[9/10] step 9\n",
                      "[10/10] step 10\n"]


def test_root_is_checked_only_for_the_collectives_that_have_one():
    """-r 5 on 2 ranks refused an all-reduce, which has no root (the sixty-ninth review)."""
    from bench import allreduce_perf

    allreduce = build_parser().parse_args(["-r", "5", "--algorithms", "ring"])
    assert allreduce_perf._library_algorithms(allreduce, None, nranks=2) == ("ring",)
    broadcast = build_parser().parse_args(["-r", "5", "--collective", "broadcast"])
    with pytest.raises(ValueError, match="--root 5 is not a rank of 2"):
        allreduce_perf._library_algorithms(broadcast, None, nranks=2)


def test_write_json_writes_non_finite_numbers_as_null(tmp_path):
    """A cost model's prediction that overflowed was written as Infinity, which is not JSON
    (the sixty-ninth review)."""
    path = tmp_path / "rows.json"
    environment.write_json(str(path), {"rows": [{"predicted_time_us": float("inf"),
                                                 "time_us": 1.5, "runs": (float("nan"), 2.0)}]})
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"rows": [{"predicted_time_us": None, "time_us": 1.5,
                                          "runs": [None, 2.0]}]}


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "out.json"
    environment.write_json(str(path), {"rows": [1, 2]})
    assert json.loads(path.read_text()) == {"rows": [1, 2]}
    assert list(tmp_path.iterdir()) == [path]


def test_write_json_neither_follows_nor_trips_on_a_planted_tmp(tmp_path):
    """It wrote through out.json.tmp: a symlink there sent the results to its target, a
    folder there failed after the sweep, two writers tore each other's file (the
    thirty-eighth review)."""
    path, victim = tmp_path / "out.json", tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "out.json.tmp").symlink_to(victim)
    environment.write_json(str(path), {"rows": [1]})
    assert victim.read_text() == "keep me" and not path.is_symlink()
    assert json.loads(path.read_text()) == {"rows": [1]}
    other = tmp_path / "other.json"
    (tmp_path / "other.json.tmp").mkdir()
    environment.write_json(str(other), {"rows": [2]})
    assert json.loads(other.read_text()) == {"rows": [2]}


def test_write_json_from_two_threads_leaves_one_whole_file(tmp_path):
    path = tmp_path / "out.json"
    documents = [{"rows": [k] * 20000} for k in range(2)]
    errors = []

    def write(document):
        try:
            for _ in range(10):
                environment.write_json(str(path), document)
        except Exception as error:  # pragma: no cover - the failure reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(d,)) for d in documents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and json.loads(path.read_text()) in documents
    assert list(tmp_path.iterdir()) == [path]


# ---------------------------------------------------------------------------- launching

def test_under_launcher():
    assert not launch.under_launcher({"HOME": "/root"})
    for name in launch.LAUNCHER_VARIABLES:
        assert launch.under_launcher({name: "0"})


@pytest.mark.parametrize("value, kind", [
    (f"local:{os.getppid()}", "local"), (f"lab:{os.getppid()}", "lab"),
    ("1", None), ("0", None), ("", None), ("lab", None), ("local:1", None),
    (f"local:{os.getppid()}x", None), ("local:\u00b2", None), ("local:" + "9" * 5000, None),
])
def test_the_launch_marker_counts_only_from_an_ancestor_under_a_launcher(value, kind):
    """The fifty-third review: a leftover COLLECTIVES_BENCH_LAUNCHED=0 made --np 3 run as one
    rank. The marker names the launching process, which must be an ancestor of this one,
    and counts only where a launcher started this process: exported in a shell it named
    the shell, an ancestor (the fifty-seventh review); '²' and 5000 digits raised."""
    marker = {"COLLECTIVES_BENCH_LAUNCHED": value}
    assert launch._launched_by_us({**marker, "PMI_RANK": "0"}) == kind
    assert launch._launched_by_us(marker) is None and not launch.under_launcher(marker)


def test_launch_command(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'HYDRA build details: Version: 4.2.0'\n")
    fake.chmod(0o755)
    command, environ = launch.launch_command(module="bench.allreduce_perf",
                                             argv=["-b", "8", "--np", "3"], nranks=3,
                                             mpiexec=str(fake))
    assert command == [str(fake), "-n", "3", sys.executable, "-m", "bench.allreduce_perf",
                       "-b", "8", "--np", "3"]
    assert launch._launched_by_us({**environ, "PMI_RANK": "0"}) == "local"  # (mpiexec's)


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
                   "--repeat", "2", "--algorithms", "ring,native", "--json", str(out)],
                  cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(out.read_text())
    rows = document["rows"]
    sizes = [8, 64, 512, 4096, 32768]
    assert [(row["size"], row["algorithm"]) for row in rows] == [
        (size, algorithm) for size in sizes for algorithm in ("mpi", "ring", "native")]
    for row in rows:
        assert row["count"] == row["size"] // 4
        assert (row["type"], row["redop"], row["wrong"]) == ("float32", "sum", 0)
        assert row["time_us"] > 0 and row["busbw"] == pytest.approx(row["algbw"])
        assert len(row["time_us_runs"]) == 2 and row["inter_node_busbw"] is None
        assert (row["predicted_time_us"] is None) == (row["algorithm"] == "mpi")
    assert document["baseline"] == "mpi" and document["ranks_per_node"] == [2]
    assert document["environment"]["nranks"] == 2
    assert document["config"]["dtype"] == "float32" and document["config"]["repeat"] == 2
    table_lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert [int(line.split()[0]) for line in table_lines] == sizes
    assert "pred   ratio #wrong |" in proc.stdout  # the latency layout below 1 MiB
    assert "ring/mpi busbw at 8 B " in proc.stdout and "# #wrong total: 0 OK" in proc.stdout
    assert "[30/30] 32 KiB mpi (turn 2/2)" in proc.stderr  # turn 2 starts at ring


def test_end_to_end_another_collective_against_mpi_alone(tmp_path):
    out = tmp_path / "bench.json"
    proc = _bench(["--np", "3", "--collective", "broadcast", "--root", "2", "--algorithms", "mpi",
                   "-b", "1K", "-e", "16K", "-f", "4", "-n", "2", "-w", "1", "-d", "int32",
                   "--json", str(out)], cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(out.read_text())
    assert document["config"]["collective"] == "broadcast" and "op" not in document["config"]
    assert [(row["size"], row["algorithm"], row["root"], row["wrong"]) for row in document["rows"]
            ] == [(size, "mpi", 2, 0) for size in (1024, 4096, 16384)]
    assert all(row["busbw"] == row["algbw"] for row in document["rows"])  # bus factor 1


def test_end_to_end_deterministic_twins(tmp_path):
    """--deterministic puts ALG+det beside each algorithm, checked like the others."""
    out = tmp_path / "bench.json"
    proc = _bench(["--np", "3", "-b", "1K", "-e", "64K", "-f", "64", "-n", "2", "-w", "1",
                   "--algorithms", "ring,native", "--deterministic", "-d", "float64",
                   "--json", str(out)], cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(row["size"], row["algorithm"], row.get("deterministic", False), row["wrong"])
            for row in rows] == [
        (size, algorithm, det, 0) for size in (1024, 65536)
        for algorithm, det in (("mpi", False), ("ring", False), ("ring", True),
                               ("native", False), ("native", True))]
    assert all((row["predicted_time_us"] is None) == (row["algorithm"] == "mpi" or
                                                      row.get("deterministic", False))
               for row in rows)
    assert "ring+det/mpi busbw" in proc.stdout


_BROKEN_LIBRARY = textwrap.dedent('''
    """A stand-in whose ring gives rank 1 three wrong elements."""
    from mpi4py import MPI

    ALGORITHMS = ("ring", "native")


    class _Tuner:
        def choose(self, nbytes):
            return "native"

        def predict(self, nbytes):
            return {}


    class Communicator:
        def __init__(self, comm):
            self._comm, self.rank, self.size = comm, comm.rank, comm.size
            self.tuner = _Tuner()

        @property
        def topology(self):
            return type("Topology", (), {"nodes": (tuple(range(self.size)),)})

        def allreduce(self, x, op="sum", algorithm="auto", compression=None, out=None,
                      deterministic=None):
            self._comm.Allreduce(x, out, op=MPI.SUM)
            if algorithm == "ring" and self.rank == 1:
                out[:3] += 1
            return out


    def init(mpi_comm=None):
        return Communicator(mpi_comm)
''')


def test_end_to_end_counts_wrong_elements(tmp_path):
    (tmp_path / "collectives").mkdir()
    (tmp_path / "collectives" / "__init__.py").write_text(_BROKEN_LIBRARY)
    out = tmp_path / "bench.json"
    proc = _bench(["--np", "2", "-b", "64", "-e", "64", "-n", "1", "-w", "0", "--json", str(out)],
                  cwd=tmp_path, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    wrong = {row["algorithm"]: row["wrong"] for row in json.loads(out.read_text())["rows"]}
    assert wrong == {"mpi": 0, "ring": 3, "native": 0}
    assert "# #wrong total: 3 FAILED" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["-b", "3", "-e", "3", "-d", "float64"], "nothing to measure: no size from 3 to 3 bytes"),
    (["-b", "8", "-e", "64", "--tensors", "100"], "nothing to measure"),
    (["-b", "8", "-e", "8", "--json", "/nonexistent/dir/x.json"], "cannot write"),
])
def test_a_sweep_that_cannot_run_says_why_in_one_line(args, message):
    """No size to measure gave an IndexError, an MPI_Abort and an UnboundLocalError; an
    unwritable --json failed after the whole sweep. Each is said once, before any rank
    starts (sizes that hold no element were refused by every rank, then MPI_Abort)."""
    proc = _bench(["--np", "2", "-n", "1", "-w", "0", *args], cwd=ROOT,
                  env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Abort" not in proc.stderr, proc.stderr


def test_unknown_algorithm_is_refused(tmp_path):
    proc = _bench(["--np", "2", "-b", "8", "-e", "8", "--algorithms", "ring,bogus"],
                  cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2
    assert "unknown algorithms for allreduce: bogus; choose from mpi, auto" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--repeat", "0"], "repeat >= 1, got 20, 5, 0"),
    (["--collective", "reduce", "--compression", "fp16"], "go with --collective allreduce"),
    (["--collective", "broadcast", "--deterministic"], "go with --collective allreduce"),
    (["--columns", "time,speed"], "unknown columns speed"),
    (["--columns", "time,time"], "columns named twice: time"),  # printed twice
    (["--np", "0"], "argument --np: need an integer above 0, got '0'"),  # was a traceback
    (["--quick"], "--quick goes with --calibrate"),  # was ignored: the full sweep ran
    (["-b", "8", "-e", "64", "--tensors", "100"], "--tensors 100 needs messages of at least"),
    (["--nodes", "2", "--lab-timeout", "nan"], "need a number of seconds above 0"),
    # the eighteenth review: the first used up the machine's memory (the OOM killer), the
    # second allocated 256 GiB arrays after launch, /proc passed the folder's access check
    # and failed after the sweep, a name twice made two columns summarised alike
    (["-b", "8", "-e", "1G", "-i", "1"], "1073741817 sizes; at most 1000"),
    (["-b", "1T", "-e", "1T"], "need about 8192.2 GiB"),
    (["-b", "8", "-e", "8", "--json", "/proc/x.json"], "cannot write /proc/x.json"),
    (["--algorithms", "ring,,ring"], "ring given twice"),
    (["--algorithms", ""], "an empty name"),
    (["--algorithms", ","], "an empty name"),  # was "',':  given twice" (the 53rd review)
    # the 84th review: two like column groups summarised as one; the empty name dropped
    (["--compression", "none,fp16,none"], "--compression: 'none,fp16,none': none given twice"),
    (["--compression", ",fp16"], "--compression: ',fp16': an empty name"),
    # the 84th review: the sweep's flags were ignored by --calibrate; a compression with
    # nothing to compress was ignored; sizes below an alltoall block were refused per rank
    (["--calibrate", "--json", "x.json", "-d", "float64"],
     "--json, --dtype: not taken with --calibrate"),
    (["--calibrate", "--quick", "--collective", "broadcast"],
     "--collective: not taken with --calibrate"),
    (["--compression", "fp16", "--algorithms", "mpi"],
     "--compression: nothing compressed is measured with --algorithms mpi"),
    (["--collective", "alltoall", "-b", "4", "-e", "4", "--algorithms", "mpi"],
     "--collective alltoall needs a float32 element per rank, 8 bytes on 2 ranks, and the "
     "largest size is 4 bytes"),
])
def test_bad_options_are_refused_before_launch(args, message):
    proc = subprocess.run([sys.executable, "-m", "bench.allreduce_perf", *args], cwd=ROOT,
                          env=_self_launch_env(PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def _special_files(tmp_path):
    """A FIFO and a socket in tmp_path (a device node stands for neither a test may make)."""
    import socket

    fifo, sock = tmp_path / "fifo.json", tmp_path / "socket.json"
    os.mkfifo(fifo)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.close()
    return {"a FIFO": fifo, "a socket": sock}


def test_a_json_path_that_is_no_regular_file_is_refused_and_left_alone(tmp_path):
    """--json FIFO was replaced by a regular file after the sweep (the fifty-third review:
    as root, --json /dev/null would replace the system's /dev/null)."""
    import stat

    for kind, path in _special_files(tmp_path).items():
        mode = os.lstat(path).st_mode
        with pytest.raises(ValueError, match=f"cannot write {path}: {kind}, not a regular file"):
            environment.check_writable(str(path))
        with pytest.raises(ValueError, match=f"{path} is {kind}, not a regular file"):
            environment.write_json(str(path), {"rows": []})
        assert stat.S_IFMT(os.lstat(path).st_mode) == stat.S_IFMT(mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.json", "socket.json"]


def test_a_json_path_that_is_a_symlink_is_replaced_not_followed(tmp_path):
    """A symlink at --json is replaced by the results' file; its target is left alone, as
    the report's outputs are (the fifty-third review)."""
    victim, link = tmp_path / "victim", tmp_path / "out.json"
    victim.write_text("keep me")
    link.symlink_to(victim)
    environment.check_writable(str(link))
    environment.write_json(str(link), {"rows": [1]})
    assert victim.read_text() == "keep me" and not link.is_symlink()
    assert json.loads(link.read_text()) == {"rows": [1]}


def test_a_json_fifo_is_refused_before_launch(tmp_path):
    fifo = _special_files(tmp_path)["a FIFO"]
    proc = subprocess.run([sys.executable, "-m", "bench.allreduce_perf", "-b", "8", "-e", "8",
                           "--json", str(fifo)], cwd=ROOT,
                          env=_self_launch_env(PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write {fifo}: a FIFO, not a regular file" in proc.stderr, proc.stderr
    assert "Abort" not in proc.stderr and fifo.is_fifo()


def test_a_stale_launch_marker_is_ignored_aloud(tmp_path):
    """The fifty-third review: COLLECTIVES_BENCH_LAUNCHED=0 left in the environment ran
    --np 2 as one rank, and said nothing."""
    proc = _bench(["--np", "2", "-b", "8", "-e", "8", "-n", "1", "-w", "0", "--algorithms",
                   "native"], cwd=ROOT,
                  env=_self_launch_env(PYTHONPATH=str(ROOT), COLLECTIVES_BENCH_LAUNCHED="0"))
    assert proc.returncode == 0, proc.stderr
    assert "# np 2 on 1 host" in proc.stdout, proc.stdout
    assert proc.stderr.count("warning: ignoring COLLECTIVES_BENCH_LAUNCHED='0'") == 1, proc.stderr


_QUICK = ["--np", "1", "--sizes", "8", "--rounds", "1", "--budget", "0.01"]


@pytest.mark.parametrize("tool", ["bench.lane_cost", "bench.agreement_cost"])
@pytest.mark.parametrize("args, message", [
    (["--np", "0"], "argument --np: need an integer above 0, got '0'"),
    (["--rounds", "0"], "argument --rounds: need an integer above 0, got '0'"),
    (["--budget", "nan"], "argument --budget: need a number of seconds above 0, got 'nan'"),
    (["--budget", "-1"], "argument --budget: need a number of seconds above 0, got '-1'"),
    (["--sizes", "1T"], "1 rank(s) on this machine need about 4096.1 GiB"),
    (["--sizes", "8Q"], "argument --sizes: not a size: '8Q'"),
    (["--sizes", "0"], "argument --sizes: a size of 0 bytes in '0': sizes start at 1 byte"),
    (["--sizes", "8,"], "argument --sizes: not a size: ''"),
    (["--sizes", "8,1K,8B"], "argument --sizes: 8 bytes given twice in '8,1K,8B'"),  # 84th
])
def test_the_cost_tools_refuse_bad_options_before_launch(tool, args, message):
    """The fifty-third review: each was a traceback (before or after launch, on every
    rank), a StatisticsError on every rank, NumPy's memory error, or a silent "0 B" row."""
    _refused_before_launch(tool, [*_QUICK, *args], message)


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "argument --runs: need an integer above 0, got '0'"),
    (["--algorithms", "bogus"], "unknown algorithms for allreduce: bogus"),
    (["--algorithms", "mpi"], "--algorithms 'mpi': mpi is always measured"),
    # the 84th review: measured as 4 bytes, printed as 6 and 1
    (["--sizes", "8,6,1"], "argument --sizes: 6, 1 bytes in '8,6,1': not a whole number of "
                           "float32 elements (4 bytes each)"),
])
def test_agreement_cost_refuses_bad_options_before_launch(args, message):
    _refused_before_launch("bench.agreement_cost", [*_QUICK, *args], message)


def test_python_m_bench_calibrate_is_collectives_bench_calibrate():
    """It ran nothing and exited 0 (the 100th review)."""
    _refused_before_launch("bench.calibrate", ["--np", "0"],
                           "argument --np: need an integer above 0, got '0'")


def _refused_before_launch(tool, args, message):
    """`python -m tool args` exits 2 with one error line, the last, naming `message`."""
    proc = subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT,
                          env=_self_launch_env(PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert message in errors[0] and errors[0] == proc.stderr.splitlines()[-1], proc.stderr


def test_lane_cost_times_every_collective_three_ways():
    """bench.lane_cost: a row per collective and size, mpi / lane / general all measured."""
    proc = subprocess.run([sys.executable, "-m", "bench.lane_cost", "--np", "2", "--sizes",
                           "8K", "--rounds", "1", "--budget", "0.01"], cwd=ROOT,
                          env=_self_launch_env(PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert [row[0] for row in rows] == ["allgather", "reduce_scatter", "broadcast"], proc.stdout
    assert all(float(value) > 0 for row in rows for value in row[4:8]), proc.stdout
    refused = subprocess.run([sys.executable, "-m", "bench.lane_cost", "--collectives", "gather"],
                             cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unknown collectives gather" in refused.stderr


def test_ranks_here_counts_what_runs_on_this_machine():
    """The memory check's rank count (the nineteenth review: under mpiexec -n 1 it counted
    the ignored --np 2)."""
    from bench.launch import LabRequest, ranks_here

    assert ranks_here(2, None, {}) == 2
    assert ranks_here(2, None, {"PMI_RANK": "0", "MPI_LOCALNRANKS": "1"}) == 1
    assert ranks_here(2, None, {"OMPI_COMM_WORLD_SIZE": "16",
                                "OMPI_COMM_WORLD_LOCAL_SIZE": "8"}) == 8
    assert ranks_here(2, None, {"SLURM_PROCID": "3"}) == 1
    assert ranks_here(2, LabRequest(nodes=2, ppn=(3, 2), link="none", timeout=60), {}) == 5
    assert ranks_here(2, LabRequest(nodes=4, ppn=2, link="none", timeout=60), {}) == 8


def test_world_size_is_known_before_mpi_where_it_can_be():
    """What the report refuses --np 1 by, before any rank starts (the fifty-third review)."""
    from bench.launch import LabRequest, ranks_here, world_size

    assert world_size(1, None, {}) == 1
    assert world_size(2, LabRequest(nodes=2, ppn=(3, 2), link="none", timeout=60), {}) == 5
    assert world_size(2, None, {"PMI_RANK": "0", "PMI_SIZE": "1"}) == 1
    assert world_size(2, None, {"OMPI_COMM_WORLD_SIZE": "16"}) == 16
    assert world_size(2, None, {"SLURM_PROCID": "0"}) is None
    for hostile in ("\u00b2", "9" * 5000, "abc", "-1", ""):  # ('²' and 5000 digits raised)
        assert world_size(2, None, {"PMI_RANK": "0", "PMI_SIZE": hostile}) is None
        assert ranks_here(2, None, {"PMI_RANK": "0", "MPI_LOCALNRANKS": hostile}) == 1


def test_check_writable_leaves_nothing_and_takes_the_longest_name(tmp_path):
    """The probe is a short name in the folder, always removed (the nineteenth review:
    `<path>.probe-<pid>` was too long for a 251-character name, and stayed behind after
    an interrupt, refusing the next check)."""
    from bench.environment import check_writable

    longest = tmp_path / ("r" * 250 + ".json")
    check_writable(str(longest))
    environment.write_json(str(longest), {"rows": []})  # (its temporary name was too long
    longest.unlink()                                     # to create: the fifty-seventh review)
    (tmp_path / "x.json").write_text("{}")
    check_writable(str(tmp_path / "x.json"))  # an existing file is overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    with pytest.raises(ValueError, match="a folder"):
        check_writable(str(tmp_path))
    for name in ("x.json/", "new/"):  # the first replaced x.json (the 84th review)
        with pytest.raises(ValueError, match=f"cannot write .*{name}: a name ending in '/' "
                                             "names a folder, not a file"):
            check_writable(f"{tmp_path}/{name}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


@pytest.mark.parametrize("module, args", [
    ("bench.allreduce_perf", ["-b", "8", "-e", "8", "-n", "1", "--json", "sub/x.json"]),
    ("bench.report", ["--quick", "--out", "sub/report"]),
])
def test_a_check_failing_on_one_rank_ends_every_rank(tmp_path, module, args):
    """A folder present on rank 0's node only (here: each rank's working folder): the rank
    that refused exited alone and the other waited in MPI for good (the sixty-ninth review).
    Now every rank exits with status 2 and rank 0 names the rank."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "b" / "sub").write_text("a file where rank 1 needs a folder")
    command = [launch.find_mpiexec()]
    for name in ("a", "b"):
        command += ["-n", "1", "-wdir", str(tmp_path / name), sys.executable, "-m", module,
                    *args, *([":"] if name == "a" else [])]
    proc = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: rank 1 (of 2): " in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr


@pytest.mark.parametrize("flags", [["--compression", "fp16"], ["--nodes", "2", "--ppn", "2"],
                                   ["--collective", "alltoall"], ["-e", "1T"],
                                   ["--algorithms", "mpi"]])
def test_shm_perf_refuses_what_it_would_not_apply(flags):
    """Flags of collectives-bench that shm_perf accepted and ignored (a lab request ran on
    one host, --calibrate wrote nothing), and sizes beyond memory refused only after the
    ranks started (the sixty-ninth review), --algorithms mpi a ZeroDivisionError on every
    rank (the 84th): refused before any rank starts."""
    proc = subprocess.run([sys.executable, "-m", "bench.shm_perf", "-b", "8", *flags],
                          cwd=ROOT, env=_self_launch_env(PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (flags[0] if flags[0] != "-e" else "lower -e") in proc.stderr.splitlines()[-1]
    assert proc.stdout == "", proc.stdout


def test_a_file_that_cannot_be_written_ends_in_one_line_and_status_3():
    """A full disk under --json or the tuning file: a traceback and status 1, which says
    some result was wrong (the 100th review)."""
    script = textwrap.dedent("""
        import os
        from bench.environment import abort_on_error

        class Comm:
            rank = 0
            Abort = staticmethod(os._exit)

        with abort_on_error(Comm()):
            raise OSError(28, "No space left on device", "out.json")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stderr == "rank 0: error: [Errno 28] No space left on device: 'out.json'\n"


_DETERMINISTIC_ENV = textwrap.dedent("""
    import sys
    from mpi4py import MPI
    import collectives.calls.reduce, collectives.calls.reduce_scatter, collectives.fusion
    from bench import allreduce_perf, calibrate

    runs = []
    for module in (collectives.fusion, collectives.calls.reduce,
                   collectives.calls.reduce_scatter):
        def counted(*args, _real=module.reproducibly, **kwargs):
            runs.append(1)
            return _real(*args, **kwargs)
        module.reproducibly = counted
    for collective in ("allreduce", "reduce_scatter", "reduce"):
        assert allreduce_perf.main(["-b", "1K", "-e", "1K", "-n", "1", "-w", "0",
                                    "--collective", collective]) == 0
    import collectives
    comm = collectives.init()
    calibrate._native_table(MPI.COMM_WORLD, comm, [1024], progress=lambda text: None)
    calibrate._call_and_plan(comm, 1024)["call"]()
    print("reproducible runs:", len(runs), file=sys.stderr)
    sys.exit(1 if runs else 0)
""")


def test_the_bench_and_calibration_run_what_their_labels_say(tmp_path):
    """COLLECTIVES_DETERMINISTIC=1 ran every plain column (and the calibration's native
    and ring timings, stored as plain) through the reproducible path (the 100th review)."""
    script = tmp_path / "deterministic_env.py"
    script.write_text(_DETERMINISTIC_ENV)
    proc = subprocess.run([launch.find_mpiexec(), "-n", "2", sys.executable, str(script)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "COLLECTIVES_DETERMINISTIC": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
