"""collectives-report: cluster files, crossovers, and a small end-to-end run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.calibrate import RUNS
from bench.harness import Row
from bench.report import ACCURACY_ALGORITHMS, crossovers, default_clusters, load_clusters
from bench.report.markdown import _accuracy_section, _measured_sections
from bench.report.model import Point, auto_runs, winners
from collectives.costmodel import Calibration, LinkModel, read_tuning, write_calibration

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"clusters": [
    {"name": "4 nodes x 2", "nodes": 4, "ranks_per_node": 2,
     "intra": {"alpha_us": 3, "gbytes_per_s": 450}, "inter": {"alpha_us": 6, "gbytes_per_s": 50},
     "reduce_gbytes_per_s": 1000},
    {"name": "2x4 torus", "nodes": 2, "ranks_per_node": 4, "grid": [4, 2],
     "intra": {"alpha_us": 2, "gbytes_per_s": 100}, "inter": {"alpha_us": 2, "gbytes_per_s": 100},
     "reduce_gbytes_per_s": 1000}]}


def test_default_clusters_are_the_named_shapes():
    sizes = [(shape.cluster.size, len(shape.cluster.topology.nodes)) for shape in default_clusters()]
    assert sizes == [(128, 16), (1024, 32), (4096, 512)]
    assert default_clusters()[1].cluster.topology.grid_shape() == (32, 32)


def test_cluster_file_errors():
    with pytest.raises(ValueError, match="lacks 'inter'"):
        load_clusters({"clusters": [{"name": "x", "nodes": 2, "ranks_per_node": 2,
                                     "intra": {"alpha_us": 1, "gbytes_per_s": 1},
                                     "reduce_gbytes_per_s": 1}]})
    with pytest.raises(ValueError, match="lists no clusters"):
        load_clusters({})
    link = {"alpha_us": 1, "gbytes_per_s": 1}
    good = {"name": "x", "nodes": 2, "ranks_per_node": 2, "reduce_gbytes_per_s": 1,
            "intra": link, "inter": link}
    for document, said in (  # each was a traceback, or accepted
            ([good], "a cluster file is an object"),
            ({"clusters": [1]}, "a cluster is an object, got 1"),
            ({"clusters": [{**good, "reduce_gbytes_per_s": 0}]},
             "reduce_gbytes_per_s must be a number >= 1e-06 and <= 1e+06, got 0"),
            ({"clusters": [{**good, "reduce_gbytes_per_s": -1}]}, "must be a number >= 1e-06"),
            ({"clusters": [{**good, "nodes": 2.7}]}, "nodes must be a whole number"),
            ({"clusters": [{**good, "grid": 5}]}, "grid must be [X, Y]"),
            # the eighteenth review: a MemoryError traceback, a simulation that never ended,
            # inf in the table
            ({"clusters": [{**good, "nodes": 10**9}]}, "at most 16384 are simulated"),
            ({"clusters": [{**good, "nodes": 100000, "ranks_per_node": 8}]}, "800000 ranks"),
            ({"clusters": [{**good, "inter": {"alpha_us": 1e308, "gbytes_per_s": 1}}]},
             "alpha_us must be a number >= 0 and <= 1e+06")):
        with pytest.raises(ValueError, match=re.escape(said)):
            load_clusters(document)
    assert load_clusters({"clusters": [good]})[0].cluster.size == 4


_LINK = {"alpha_us": 1, "gbytes_per_s": 1}
_GOOD = {"name": "x", "nodes": 2, "ranks_per_node": 2, "reduce_gbytes_per_s": 1,
         "intra": _LINK, "inter": _LINK}


@pytest.mark.parametrize("clusters, said", [  # each was accepted (the hostile review)
    ([{**_GOOD, "nodes": 1, "ranks_per_node": 1}],
     "1 x 1 = 1 ranks; an all-reduce needs at least 2"),
    ([{**_GOOD, "inter": {**_LINK, "gbytes_per_s": 1e-300}}],
     "gbytes_per_s must be a number >= 1e-06 and <= 1e+06, got 1e-300"),
    ([{**_GOOD, "reduce_gbytes_per_s": 1e-300}], "reduce_gbytes_per_s must be a number >= 1e-06"),
    ([{**_GOOD, "torus_links": "false"}], "torus_links must be true or false, got 'false'"),
    ([{**_GOOD, "intra": {**_LINK, "zero_copy": "no"}}],
     "zero_copy must be true or false, got 'no'"),
    ([_GOOD, {**_GOOD, "nodes": 4}], "name 'x' names two clusters"),
    ([{**_GOOD, "name": "x\n# injected heading"}], "name must be a non-empty string of printable"),
    ([{**_GOOD, "name": ""}], "name must be a non-empty string"),
    ([{**_GOOD, "name": 7}], "name must be a non-empty string"),
    # misspelled options were ignored silently, a grid of 0 read as none (twenty-ninth review)
    ([{**_GOOD, "torus_link": True}], "cluster 'x': unknown field 'torus_link'"),
    ([{**_GOOD, "intra": {**_LINK, "zerocopy": True}}], "cluster 'x' intra: unknown field 'zerocopy'"),
    ([{**_GOOD, "grid": 0}], "grid must be [X, Y], two whole numbers >= 1, got 0"),
    # the fifty-third review: an OverflowError traceback, a bool taken as 1
    ([{**_GOOD, "inter": {**_LINK, "alpha_us": 10**400}}],
     f"alpha_us must be a number >= 0 and <= 1e+06, got {10**400}"),
    ([{**_GOOD, "reduce_gbytes_per_s": -10**400}],
     "reduce_gbytes_per_s must be a number >= 1e-06 and <= 1e+06, got -1000"),
    ([{**_GOOD, "grid": [True, 4]}], "grid must be [X, Y], two whole numbers >= 1, got [True, 4]"),
    ([{**_GOOD, "grid": [2, 2.0]}], "grid must be [X, Y], two whole numbers >= 1, got [2, 2.0]"),
    ([{**_GOOD, "grid": [4]}], "grid must be [X, Y], two whole numbers >= 1, got [4]"),
    # the 84th review: a TypeError, and advice for init (grid=, COLLECTIVES_GRID)
    ([{**_GOOD, "intra": None}], "cluster 'x': intra must be an object {alpha_us, "
                                 "gbytes_per_s}, got None"),
    ([{**_GOOD, "inter": [1, 2]}], "cluster 'x': inter must be an object"),
    ([{**_GOOD, "grid": [3, 5]}], "cluster 'x': grid 3x5 holds 15 ranks, but it has 2 x 2 = 4: "
                                  "fix the file's \"grid\" (X * Y ranks) or leave it out"),
])
def test_cluster_files_of_nonsense_shapes_are_refused(clusters, said):
    with pytest.raises(ValueError, match=re.escape(said)):
        load_clusters({"clusters": clusters})


def test_a_cluster_file_key_other_than_clusters_is_refused():
    """Unknown per-cluster fields were refused, an unknown top-level key ignored silently
    (the fifty-third review)."""
    with pytest.raises(ValueError, match=re.escape(
            "the cluster file: unknown field 'cluster'; the fields are clusters")):
        load_clusters({"clusters": [_GOOD], "cluster": [{**_GOOD, "nodes": 8}]})


def test_a_cluster_grid_of_whole_numbers_is_taken():
    (shape,) = load_clusters({"clusters": [{**_GOOD, "grid": [4, 1]}]})
    assert shape.cluster.topology.grid_shape() == (4, 1)


def test_cluster_flags_take_json_booleans():
    (shape,) = load_clusters({"clusters": [{**_GOOD, "torus_links": True,
                                            "intra": {**_LINK, "zero_copy": True}}]})
    assert shape.cluster.torus_links and shape.cluster.intra.zero_copy
    assert not shape.cluster.inter.zero_copy


def test_a_nonsense_cluster_file_is_refused_in_one_line_before_launch(tmp_path):
    clusters = tmp_path / "clusters.json"
    clusters.write_text(json.dumps({"clusters": [{**_GOOD, "torus_links": "false"}]}))
    proc = _report(tmp_path / "tuning.json", "--out", str(tmp_path / "r"), "--quick",
                   "--max-bytes", "64K", "--cluster", str(clusters))  # short, were it launched
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "error: --cluster " + str(clusters) + ": torus_links must be true or false, got 'false'")


def _row(label: str, size: int, time_us: float) -> Row:
    """A measured row of the sweep (2 ranks, float32)."""
    algorithm, _, compression = label.partition("+")
    return Row(size=size, count=size // 4, label=label, wrong=0, time_us=time_us, algbw=0.0,
               busbw=size / time_us / 1e3,
               fields={"algorithm": algorithm, "compression": compression or None})


def _comm(*, check: bool, deterministic: bool = False) -> SimpleNamespace:
    """What auto_runs reads of a communicator: 2 ranks whose tuner picks native below 32 KiB."""
    tuner = SimpleNamespace(choose=lambda n: "native" if n < 32 << 10 else "halving_doubling")
    return SimpleNamespace(size=2, tuner=tuner, settings=SimpleNamespace(
        check=check, deterministic=deterministic))


def test_winner_table_shows_what_auto_ran_and_its_own_time():
    """The review's 4 KiB: auto fastest at 225.5 us in the measured table, while the winner
    table gave native's 2,858.0 us as auto's (a small auto call rides with the records)."""
    rows = [_row(label, size, time_us) for size, times in (
                (4096, {"mpi": 150.0, "auto": 225.5, "auto+fp16": 200.0, "native": 2858.0,
                        "halving_doubling": 1173.5, "ring": 1500.0}),
                (65536, {"mpi": 150.0, "auto": 900.0, "auto+fp16": 100.0, "native": 2000.0,
                         "halving_doubling": 950.0, "ring": 800.0}))
            for label, time_us in times.items()]
    best = winners(rows, auto_runs(_comm(check=True)))
    assert best == [(4096, "halving_doubling", "direct"), (65536, "ring", "halving_doubling")]
    report = "\n".join(_measured_sections(rows, best))
    assert ("| 4 KiB | halving_doubling | 1,173.5 | direct (rides with the records) | 225.5 |"
            in report)
    assert "| 64 KiB | ring | 800.0 | halving_doubling | 900.0 |" in report
    assert winners(rows, auto_runs(_comm(check=False)))[0] == (4096, "halving_doubling", "native")
    runs = auto_runs(_comm(check=True, deterministic=True))  # (COLLECTIVES_DETERMINISTIC=1)
    assert {runs(n) for n in (8, 4096, 65536)} == {"deterministic"}


def _calibration() -> Calibration:
    link = LinkModel(alpha=20e-6, beta=1 / 4e9, cpu_copy=True)
    return Calibration(size=2, intra=link, inter=link, gamma=1 / 4e9, call_overhead=5e-5,
                       copy_beta=1 / 8e9, native=((8, 2e-5), (128 << 20, 0.2)),
                       by_size=((64 << 10, 1 / 4e9, 1 / 4e9, 1 / 3e9, 1 / 8e9, 5e-5),
                                (64 << 20, 1 / 8e9, 1 / 8e9, 1 / 6e9, 1 / 9e9, 6e-5)))


def test_accuracy_text_names_the_sizes_measured_and_what_the_calibration_covers():
    """--max-bytes 64K measured 64 KiB only; the text said "from 64 KiB to 64 MiB"."""
    points = {name: [Point(64 << 10, 1e-3, 1.1e-3, 1.05e-3)] for name in ACCURACY_ALGORITHMS}
    text = "\n".join(_accuracy_section(points, _calibration(), None, None))
    assert "halving_doubling at 64 KiB. Timed again" in text and "to 64 MiB." not in text
    assert ("a whole calibration, the kind the tuning file keeps, so its micro-benchmarks go to "
            "64 MiB and native's table to 128 MiB whatever `--max-bytes`") in text


@pytest.mark.parametrize("name, accuracy_only", [
    ("report.md", False), ("results.json", False), ("results.json.tmp", False),
    ("winners.png", False), ("accuracy.png", True)])
def test_an_output_that_is_no_plain_file_is_refused_before_launch(tmp_path, name, accuracy_only):
    """A folder named report.md: 73 s of measuring, then IsADirectoryError and MPI_Abort."""
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    proc = _report(tmp_path / "tuning.json", "--out", str(out), "--quick", "--max-bytes", "64K",
                   *(["--accuracy-only"] if accuracy_only else []))  # short, were it launched
    assert proc.returncode == 2, proc.stderr
    assert f"--out {out}: {name} there is not a plain file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def _write_each_output(path: Path) -> None:
    """Write the report's output named like `path` (report.md or a plot) at `path`."""
    from bench.report import plots
    from bench.report.markdown import write_markdown

    points = {name: [Point(64 << 10, 1e-3, 1.1e-3, 1.05e-3)] for name in ACCURACY_ALGORITHMS}
    rows = [_row("ring", 4096, 100.0), _row("ring", 8192, 150.0)]
    scale = [{"name": "x", "sizes": [1024, 2048], "crossovers": [],
              "algorithms": {"ring": {1024: {"busbw": 1.0}, 2048: {"busbw": 2.0}}}}]
    env = {"nranks": 2, "hostname": "h", "date": "d", "mpi_library": "m", "cpus": 2}
    writers = {
        "report.md": lambda: write_markdown(
            path, command="c", env=env, accuracy_calibration=_calibration(), source="s",
            rows=[], winners=[], points=points, file_points=None, scale=[], plots=[],
            elapsed=1.0),
        "accuracy.png": lambda: plots.plot_accuracy(points, path, np_=2),
        "busbw.png": lambda: plots.plot_busbw(rows, path, np_=2),
        "winners.png": lambda: plots.plot_winners([(4096, "ring", "direct")], path, np_=2),
        "at_scale.png": lambda: plots.plot_scale(scale, path)}
    writers[path.name]()


@pytest.mark.parametrize("name", ["lab $\\undefinedcmd$ nodes", "a $^$ b"])
def test_a_cluster_name_is_drawn_as_text(tmp_path, name):
    """A name holding "$...$" was parsed as mathtext: it raised once measured, and the
    report lost its measurements (the 100th review)."""
    from bench.report import plots

    scale = [{"name": name, "sizes": [1024, 2048], "crossovers": [],
              "algorithms": {"ring": {1024: {"busbw": 1.0}, 2048: {"busbw": 2.0}}}}]
    plots.plot_scale(scale, tmp_path / "at_scale.png")
    assert (tmp_path / "at_scale.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["report.md", "accuracy.png", "busbw.png", "winners.png",
                                  "at_scale.png"])
def test_every_report_output_is_written_atomically(tmp_path, name):
    """report.md (write_text) and the plots (savefig) wrote through a symlink at their
    name into its target, and in place: a reader (or an interrupt) saw a part; results.json
    went through write_atomically (the fifty-third review). Now all do: the link is
    replaced, its target left alone, and the old file stays whole for who holds it open."""
    path, victim = tmp_path / name, tmp_path / "victim"
    victim.write_text("keep me")
    path.symlink_to(victim)
    _write_each_output(path)
    assert victim.read_text() == "keep me" and not path.is_symlink()
    written = path.read_bytes()
    assert written.startswith(b"# All-reduce report" if name == "report.md" else b"\x89PNG")
    with open(path, "rb") as reader:
        _write_each_output(path)
        assert reader.read() == written  # the old file, whole: the new one replaced it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "victim"])


@pytest.mark.parametrize("args, said", [
    (["--max-bytes", "0"], "--max-bytes must be at least 8 bytes"),  # meant the default
    (["--max-bytes", "4"], "--max-bytes must be at least 8 bytes"),  # failed after 17 s
    (["--np", "-1"], "argument --np: need an integer above 0, got '-1'"),
    (["--lab-timeout", "-5"], "need a number of seconds above 0"),
    # the fifty-third review: 1T was measured toward (1 TiB per rank); --np 1 was refused
    # by the ranks, MPI_Abort, and left the --out folder made
    (["--max-bytes", "1T"], "2 rank(s) on this machine need about 8192.2 GiB"),
    (["--max-bytes", "1T"], "lower --max-bytes or the ranks"),
    (["--np", "1"], "collectives-report needs at least 2 ranks (--np 2 or more), got 1"),
])
def test_bad_report_options_are_refused_before_launch(tmp_path, args, said):
    proc = _report(tmp_path / "tuning.json", "--out", str(tmp_path / "r"), *args, timeout=60)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert "Abort" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()  # nothing made


def test_one_rank_under_a_launcher_is_refused_before_the_out_folder_is_made(tmp_path):
    """`mpiexec -n 1 python -m bench.report`: the rank said so after making --out."""
    from bench.launch import find_mpiexec

    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "OMPI_", "COLLECTIVES_BENCH_", "PMIX_"))}
    env.update(PYTHONPATH=str(ROOT), COLLECTIVES_TUNING_FILE=str(tmp_path / "tuning.json"))
    proc = subprocess.run([find_mpiexec(), "-n", "1", sys.executable, "-m", "bench.report",
                           "--out", str(tmp_path / "r")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "needs at least 2 ranks (--np 2 or more), got 1" in proc.stderr, proc.stderr
    assert "Abort" not in proc.stderr and not (tmp_path / "r").exists()


def test_a_cluster_file_that_is_no_regular_file_is_refused(tmp_path):
    """A FIFO blocked the report forever before it did anything."""
    fifo = tmp_path / "clusters.json"
    os.mkfifo(fifo)
    proc = _report(tmp_path / "tuning.json", "--out", str(tmp_path / "r"), "--cluster", str(fifo))
    assert proc.returncode == 2 and "not a regular file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("out", ["/proc/collectives-report", "/dev/null/report"])
def test_an_out_folder_that_cannot_be_made_is_refused_before_launch(tmp_path, out):
    """root passed the access check: a traceback and MPI_Abort after the ranks started."""
    proc = _report(tmp_path / "tuning.json", "--out", out)
    assert proc.returncode == 2 and f"--out {out}: cannot write there" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_report_out_must_be_a_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = _report(tmp_path / "tuning.json", "--out", str(afile))
    assert proc.returncode == 2 and "is a file: name a folder" in proc.stderr, proc.stderr


def test_crossovers_name_the_sizes_where_the_ranking_changes():
    table = {"a": {1: {"time_us": 1.0}, 2: {"time_us": 5.0}, 4: {"time_us": 9.0}},
             "b": {1: {"time_us": 2.0}, 2: {"time_us": 4.0}, 4: {"time_us": 8.0}}}
    assert crossovers(table, [1, 2, 4]) == [{"between": [1, 2], "before": ["a", "b"],
                                             "after": ["b", "a"]}]


def _report(tuning, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m bench.report ARGS`, launching its own ranks (no launcher's variables), with
    `tuning` as the tuning file."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "OMPI_", "COLLECTIVES_BENCH_", "PMIX_"))}
    env.update(PYTHONPATH=str(ROOT), COLLECTIVES_TUNING_FILE=str(tuning))
    return subprocess.run([sys.executable, "-m", "bench.report", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_quick_report_end_to_end(tmp_path):
    tuning = tmp_path / "tuning.json"
    link = LinkModel(alpha=20e-6, beta=1 / 4e9, zero_copy=True)
    write_calibration(Calibration(size=2, intra=link, inter=link, gamma=1 / 4e9, call_overhead=5e-5,
                                  copy_beta=1 / 8e9, native=((8, 2e-5), (1 << 20, 1e-3))), tuning)
    clusters = tmp_path / "clusters.json"
    clusters.write_text(json.dumps(SMALL))
    out = tmp_path / "out"
    proc = _report(tuning, "--quick", "--np", "2", "--max-bytes", "64K", "--out", str(out),
                   "--cluster", str(clusters))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pngs = sorted(path.name for path in out.glob("*.png"))
    assert pngs == ["accuracy.png", "at_scale.png", "busbw.png", "winners.png"]
    assert all((out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pngs)
    document = json.loads((out / "results.json").read_text())
    rows = document["rows"]
    assert {row["algorithm"] for row in rows} >= {"mpi", "native", "ring", "hierarchical",
                                                   "torus2d", "halving_doubling", "auto"}
    assert {row["size"] for row in rows} == {8, 64, 512, 4096, 32768, 65536}  # x8, then the top
    assert all(row["wrong"] == 0 and row["time_us"] > 0 for row in rows)
    assert all(row["predicted_time_us"] > 0 for row in rows
               if row["compression"] is None and row["algorithm"] != "mpi")
    assert all(row["predicted_time_us"] is None for row in rows if row["algorithm"] == "mpi")
    assert document["baseline"] == "mpi"
    assert "mpi" not in {winner["measured"] for winner in document["winners"]}
    assert [w["auto_pick"] for w in document["winners"]][:4] == ["direct"] * 4  # 8 B .. 4 KiB
    accuracy = document["accuracy"]
    assert sorted(point["algorithm"] for point in accuracy) == sorted(ACCURACY_ALGORITHMS)
    assert all(point["size"] == 65536 and point["time_us"] > 0 and point["predicted_time_us"] > 0
               and point["error"] == pytest.approx(point["predicted_time_us"] / point["time_us"] - 1)
               and point["repeat_difference"] == pytest.approx(point["again_time_us"] / point["time_us"] - 1)
               for point in accuracy)
    assert [c["ranks"] for c in document["at_scale"]] == [8, 8]
    assert document["calibration"]["source"] == "tuning file, np=2"
    report = (out / "report.md").read_text()
    for heading in ("## Measured", "## Winner per size", "## Model vs measurement",
                    "## At scale (simulated)", "### 4 nodes x 2", "### 2x4 torus", "**Worst case: ",
                    "| timed again |", "The same calls timed twice differed by up to ",
                    "Against MPI's own all-reduce (`mpi`", "ring/mpi busbw at 8 B ",
                    "halving_doubling at 64 KiB. Timed again", "| direct (rides with the records) |"):
        assert heading in report
    # the progress bar, a step per half second and always the last
    assert re.search(r"\[(\d+)/\1\] 64 KiB halving_doubling\+fp16\n", proc.stderr), proc.stderr


def test_accuracy_only_report(tmp_path):
    """--accuracy-only: no sweep and no at-scale section, only the model vs measurement."""
    tuning = tmp_path / "tuning.json"
    link = LinkModel(alpha=20e-6, beta=1 / 4e9, cpu_copy=True)
    rows = ((1 << 16, 1 / 4e9, 1 / 4e9, 1 / 3e9, 1 / 8e9, 5e-5), (1 << 20, 1 / 8e9, 1 / 8e9, 1 / 6e9, 1 / 9e9, 6e-5))
    write_calibration(Calibration(size=2, intra=link, inter=link, gamma=1 / 4e9, call_overhead=5e-5,
                                  copy_beta=1 / 8e9, by_size=rows), tuning)
    out = tmp_path / "out"
    proc = _report(tuning, "--accuracy-only", "--np", "2", "--max-bytes", "256K", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(path.name for path in out.glob("*.png")) == ["accuracy.png"]
    document = json.loads((out / "results.json").read_text())
    assert document["rows"] == [] and document["at_scale"] == []
    assert {(p["algorithm"], p["size"]) for p in document["accuracy"]} == {
        (name, size) for name in ACCURACY_ALGORITHMS for size in (64 << 10, 256 << 10)}
    assert all(p["tuning_file_error"] == pytest.approx(p["tuning_file_predicted_time_us"] / p["time_us"] - 1)
               for p in document["accuracy"])
    assert document["calibration"]["source"] == "tuning file, np=2"
    taken = {row[0] for row in document["accuracy_calibration"]["by_size"]}
    assert taken >= {64 << 10, 256 << 10} and taken != {1 << 16, 1 << 20}  # not the file's rows
    report = (out / "report.md").read_text()
    assert "## Model vs measurement" in report and "## Measured" not in report
    assert "## At scale" not in report and "per call size" in report
    assert "predicted from the tuning file (us)" in report and "From the tuning file: Worst case" in report


def test_report_without_a_tuning_entry_keeps_its_calibration(tmp_path):
    """No entry for this np: the calibration taken with the accuracy points is the report's
    and is written to the tuning file, where auto finds it later."""
    tuning = tmp_path / "tuning.json"
    out = tmp_path / "out"
    proc = _report(tuning, "--accuracy-only", "--quick", "--np", "2", "--max-bytes", "64K",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (written,) = read_tuning(tuning).values()
    document = json.loads((out / "results.json").read_text())
    assert document["calibration"]["source"] == "calibrated now, np=2"
    assert Calibration.from_json({k: v for k, v in document["calibration"].items() if k != "source"}) == written
    assert "accuracy_calibration" not in document
    assert all("tuning_file_error" not in point for point in document["accuracy"])
    assert f"model vs measurement: timed run {RUNS}/{RUNS}" in proc.stderr  # progress
