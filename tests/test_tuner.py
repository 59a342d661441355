"""auto: the tuner's choice from predicted times, the tuning file, calibration end to end."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.calibrate import fit_alpha_beta
from collectives.algorithms import PLANNERS
from collectives.costmodel import (DEFAULT_CALIBRATION, TUNING_MAX_BYTES, Calibration,
                                   ClusterModel, LinkModel, NativeModel, load_calibration,
                                   read_tuning, tuning_path, write_calibration)
from collectives import files
from collectives.files import folder_locked, write_atomically
from collectives.simulator import simulate
from collectives.topology import Topology
from collectives import tuner as tuner_module
from collectives.tuner import CANDIDATES, Tuner, Wire
from tests.mpirun import run_workers

ROOT = Path(__file__).resolve().parent.parent
LINK = LinkModel(alpha=20e-6, beta=1 / 5e9, zero_copy=True)


def machine(native_points, size: int = 4) -> ClusterModel:
    return ClusterModel(Topology.from_local_size(size, size), intra=LINK, inter=LINK, gamma=1 / 4e9,
                        call_overhead=30e-6, copy_beta=1 / 10e9,
                        native=NativeModel(size, tuple(native_points)))


def test_candidates_include_native_and_every_plan():
    assert CANDIDATES == ("native", *PLANNERS["allreduce"])
    assert set(Tuner(machine([])).predict(1 << 20)) == set(CANDIDATES)


def test_choice_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(tuner_module, "CHOICE_CACHE_SIZE", 3)
    tuner = Tuner(machine([]))
    picks = [tuner.choose(8 * n) for n in range(1, 8)]
    assert len(tuner._choices) == 3 and set(tuner._choices) == {40, 48, 56}
    assert tuner.choose(8) == picks[0]  # a dropped size is priced again, the same way


def test_picks_native_where_it_is_measured_faster_and_a_plan_where_not():
    # native: 10 us at 8 B (latency far below the plans' alpha), 200 ms at 64 MiB (slow).
    tuner = Tuner(machine([(8, 10e-6), (64 << 20, 0.2)]))
    assert tuner.choose(8) == "native"
    big = tuner.predict(64 << 20)
    choice = tuner.choose(64 << 20)
    assert choice != "native" and big[choice] == min(big.values())


def test_prediction_is_plan_simulation_plus_call_cost():
    model = machine([(8, 10e-6), (1 << 30, 1.0)])
    times = Tuner(model).predict(1 << 20)
    plan = simulate("ring", model, (1 << 20) // 4).time
    assert times["ring"] == pytest.approx(plan + 30e-6)
    assert times["native"] == pytest.approx(model.native_time(1 << 20))


def test_choice_is_cached_per_size():
    tuner = Tuner(machine([(8, 10e-6), (64 << 20, 0.2)]))
    first = tuner.choose(4 << 20)
    tuner.cluster = None  # a second call for the same size must not price again
    assert tuner.choose(4 << 20) == first


def test_debug_logs_choice_and_predicted_times(caplog):
    tuner = Tuner(machine([(8, 10e-6), (64 << 20, 0.2)]), source="test model", debug=True)
    with caplog.at_level(logging.DEBUG, logger="collectives.tuner"):
        tuner.choose(8)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("auto: allreduce of 8 bytes on 4 ranks -> native; predicted native 10.0 us")
    assert all(name in message for name in CANDIDATES) and "(test model)" in message


def test_native_model_interpolates_measurements_and_models_other_sizes():
    native = NativeModel(2, ((8, 1e-5), (1024, 1e-4), (1 << 20, 1e-2)))
    assert native.measured(32, 2) == pytest.approx(1e-5 * (1e-4 / 1e-5) ** (2 / 7))  # log-log
    assert native.measured(4, 2) == 1e-5
    assert native.measured(2 << 20, 2) == pytest.approx(1e-2 + (1 << 20) * (1e-2 - 1e-4) / ((1 << 20) - 1024))
    assert native.measured(32, 4) is None
    slow = LinkModel(alpha=1e-5, beta=1e-9)
    assert NativeModel.modelled(8, 8, slow, 0.0) == pytest.approx(3 * (1e-5 + 8e-9))  # doubling


@pytest.mark.parametrize("call, said", [
    (lambda t: t.predict(float("nan")), "nbytes must be an int in [0, 2**62], got nan"),
    (lambda t: t.choose(12345.0), "nbytes must be an int in [0, 2**62], got 12345.0"),
    (lambda t: t.choose(-1), "nbytes must be an int in [0, 2**62], got -1"),
    (lambda t: t.choose(True), "nbytes must be an int in [0, 2**62], got True"),
    (lambda t: t.predict(2**1100), "nbytes must be an int in [0, 2**62], got 1"),  # overflowed
    (lambda t: t.choose(1024, "bogus"), "unknown collective 'bogus'; accepted: 'allreduce'"),
    (lambda t: t.compression(4096, "bogus"), "unknown algorithm 'bogus'; accepted: 'auto'"),
])
def test_hostile_sizes_and_names_are_refused(call, said):
    """nan gave an AssertionError deep in the model, 'bogus' a 'no native model', a cached
    choose(0) accepted 0.0 that predict refused."""
    tuner = Tuner(machine([]))
    tuner.choose(0)
    with pytest.raises(ValueError, match=re.escape(said)):
        call(tuner)


def test_huge_messages_are_priced_at_once_as_a_scaled_gibibyte():
    """The simulator walks every segment: choose(2**62) never returned."""
    tuner = Tuner(machine([]))
    start = time.monotonic()
    assert tuner.choose(2 ** 62) == tuner.choose(tuner_module.PRICED_BYTES)
    times = tuner.predict(4 * tuner_module.PRICED_BYTES)
    assert time.monotonic() - start < 20  # (it never returned: a bound, not a timing)
    base = tuner.predict(tuner_module.PRICED_BYTES)
    assert times == pytest.approx({name: 4 * t for name, t in base.items()})


def test_tuning_file_round_trip(tmp_path):
    path = tmp_path / "tuning.json"
    assert read_tuning(path) == {}
    two = Calibration(size=2, intra=LINK, inter=LINK, gamma=1e-10, call_overhead=1e-5,
                      copy_beta=1e-10, native=((8, 1e-5), (1024, 2e-5)))
    write_calibration(two, path, host="test")
    write_calibration(Calibration(**{**two.__dict__, "size": 4, "native": ()}), path)
    entries = read_tuning(path)
    assert entries[2] == two and sorted(entries) == [2, 4]
    assert load_calibration(2, path) == (two, "tuning file, np=2")
    nearest, source = load_calibration(3, path)
    assert source == "tuning file, np=2 (nearest)" and nearest.native == () and nearest.size == 3
    assert load_calibration(2, tmp_path / "absent.json")[1] == "defaults (no tuning file)"
    assert json.loads(path.read_text())["host"] == "test"


def test_tuning_file_errors(tmp_path):
    path = tmp_path / "tuning.json"
    path.write_text('{"version": 99, "calibrations": {}}')
    with pytest.raises(ValueError, match=f"tuning file {path} has version 99, expected 1"):
        read_tuning(path)
    # recalibrating refuses the same file: the advice was a circle (the 84th review)
    with pytest.raises(ValueError, match="; delete or move it .*, then recalibrate "):
        read_tuning(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        read_tuning(path)


def test_a_tuning_file_that_is_no_regular_file_or_too_large_is_refused(tmp_path):
    """A FIFO blocked init on rank 0 forever (the others in an unbounded all-gather), and
    /dev/zero filled its memory: refused by name, as a malformed file is (defaults used)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(ValueError, match=f"tuning file {path} is unreadable .*not a "
                                             "regular file"):
            read_tuning(path)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (TUNING_MAX_BYTES + 1))
    with pytest.raises(ValueError, match=f"larger than {TUNING_MAX_BYTES} bytes"):
        read_tuning(big)


def test_default_calibration_makes_a_usable_model():
    model = DEFAULT_CALIBRATION.cluster(Topology.from_local_size(8, 4))
    times = Tuner(model).predict(16 << 20)
    assert all(t > 0 for t in times.values())


def test_a_plan_replaces_native_only_when_clearly_faster():
    cheapest = tuner_module._cheapest
    small, large = 64 << 10, 16 << 20
    assert cheapest({"native": 1.0, "ring": 0.85}, small) == "native"  # within the margin
    assert cheapest({"native": 1.0, "ring": 0.75, "torus2d": 0.70}, small) == "torus2d"
    assert cheapest({"native": 0.5, "ring": 0.85}, small) == "native"
    # bandwidth-bound: the narrow margin (the lab's 2x2 nodes: plans 6-9% cheaper)
    assert cheapest({"native": 1.0, "hierarchical": 0.92}, large) == "hierarchical"
    assert cheapest({"native": 1.0, "hierarchical": 0.97}, large) == "native"
    assert cheapest({"native": 1.0, "hierarchical": 0.92}, small) == "native"


@pytest.mark.parametrize("size", [2, 4, 8])
def test_default_model_keeps_native_for_tiny_messages_and_plans_for_large(size):
    """Without a tuning file: MPI's own all-reduce first copies its input (the executor does
    not), so at 64 MiB a plan wins; at 8 bytes the plans' extra per-message work loses."""
    tuner = Tuner(DEFAULT_CALIBRATION.cluster(Topology.from_local_size(size, size)))
    assert tuner.choose(8) == "native"
    assert tuner.choose(64 << 20) != "native"


def test_fit_alpha_beta_recovers_constants():
    sizes = [8 << (3 * i) for i in range(8)]
    alpha, beta = fit_alpha_beta(sizes, [12e-6 + n * 2.5e-10 for n in sizes])
    assert alpha == pytest.approx(12e-6, rel=1e-6) and beta == pytest.approx(2.5e-10, rel=1e-6)


def test_auto_under_mpiexec_agrees_and_logs(tmp_path):
    """Also with a `measured` nested 960 deep (valid JSON): rank 0 failed to pickle it for
    the others, which waited for ever in init (the ninety-second review)."""
    write_calibration(Calibration(size=2, intra=LINK, inter=LINK, gamma=1e-10, call_overhead=1e-5,
                                  copy_beta=1e-10, native=((8, 1e-6), (4 << 20, 1.0)),
                                  measured={"deep": "DEEP"}),
                      tmp_path / "tuning.json")
    text = (tmp_path / "tuning.json").read_text()
    (tmp_path / "tuning.json").write_text(text.replace('"DEEP"', "[" * 960 + "]" * 960))
    proc = run_workers(2, "auto_choice", env={"COLLECTIVES_DEBUG": "1",
                                              "COLLECTIVES_TUNING_FILE": str(tmp_path / "tuning.json")})
    assert "auto: allreduce of 8 bytes on 2 ranks -> native; predicted native 1.0 us" in proc.stderr
    assert "auto: allreduce of 4194308 bytes on 2 ranks -> " in proc.stderr
    assert "(tuning file, np=2)" in proc.stderr


def _calibrate(tuning: Path) -> subprocess.CompletedProcess:
    """`python -m bench.allreduce_perf --calibrate --quick --np 2` writing `tuning`."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "OMPI_", "COLLECTIVES_BENCH_", "PMIX_"))}
    env.update(PYTHONPATH=str(ROOT), COLLECTIVES_TUNING_FILE=str(tuning))
    return subprocess.run([sys.executable, "-m", "bench.allreduce_perf", "--calibrate", "--quick",
                           "--np", "2"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_calibrate_end_to_end(tmp_path):
    proc = _calibrate(tmp_path / "tuning.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (calibration,) = read_tuning(tmp_path / "tuning.json").values()
    assert calibration.size == 2 and calibration.intra.alpha > 0 and calibration.intra.beta > 0
    assert calibration.gamma > 0 and len(calibration.native) >= 5
    assert "# calibration at np 2" in proc.stdout and "written to" in proc.stdout


@pytest.mark.parametrize("case", ["corrupt", "version", "other entry", "parent a file", "fifo",
                                  "unknown home"])
def test_calibrate_refuses_a_tuning_file_it_cannot_add_to_before_measuring(tmp_path, case):
    """After 48 s of measuring, a corrupt tuning file gave "... is unreadable; delete it or
    recalibrate" (while recalibrating) and the calibration was lost; a parent that is a
    file gave a FileExistsError traceback after 56 s (the fifty-third review). A path
    under an unknown user's home (~nobody-here/) hung: rank 0's RuntimeError escaped the
    check, rank 1 waited for its answer (the seventy-seventh review)."""
    tuning = tmp_path / "tuning.json"
    entry = {**DEFAULT_CALIBRATION.as_json(), "size": 4, "by_size": [[]]}
    said = {"corrupt": f"tuning file {tuning} is unreadable",
            "version": f"tuning file {tuning} has version 0, expected 1",
            "other entry": f"tuning file {tuning}: the entry for np='4' is malformed",
            "parent a file": f"tuning file {tmp_path / 'afile' / 'tuning.json'}: "
                             f"{tmp_path / 'afile'} is not a folder",
            "fifo": f"cannot write {tuning}: a FIFO, not a regular file",
            "unknown home": "COLLECTIVES_TUNING_FILE='~nobody-here/tuning.json': Could not "
                            "determine home directory: set COLLECTIVES_TUNING_FILE"}[case]
    if case == "corrupt":
        tuning.write_text("{not json")
    elif case == "version":
        tuning.write_text('{"version": 0}')
    elif case == "other entry":
        tuning.write_text(json.dumps({"version": 1, "calibrations": {"4": entry}}))
    elif case == "parent a file":
        (tmp_path / "afile").write_text("")
        tuning = tmp_path / "afile" / "tuning.json"
    elif case == "unknown home":
        tuning = Path("~nobody-here/tuning.json")
    else:
        os.mkfifo(tuning)
    proc = _calibrate(tuning)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr, proc.stderr
    assert case == "unknown home" or "calibrating adds to this file" in proc.stderr, proc.stderr
    assert "recalibrate" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "calibrating:" not in proc.stderr, proc.stderr  # nothing measured


class _OneRank:
    """A world of one: rank 0's transport, as Tuner.agreed asks it."""

    rank = 0

    def allgather_object(self, obj):
        return [obj]


def test_bad_tuning_file_falls_back_to_defaults(tmp_path, monkeypatch, caplog):
    """A corrupt cache file must not break init: auto warns and uses the defaults."""
    path = tmp_path / "tuning.json"
    path.write_text("{not json")
    monkeypatch.setenv("COLLECTIVES_TUNING_FILE", str(path))

    with caplog.at_level(logging.WARNING, logger="collectives.tuner"):
        tuner = Tuner.agreed(_OneRank(), Topology.from_local_size(2, 2))
    assert tuner.source == "defaults (bad tuning file)"
    assert "unreadable" in caplog.text
    assert tuner.choose(8) in CANDIDATES


@pytest.mark.parametrize("content, said", [
    ("[1, 2]", "holds a list, not an object"),
    ("null", "holds a NoneType"),
    ('{"version": 1, "calibrations": [1]}', "'calibrations' must be an object"),
    ('{"version": 1, "calibrations": {"2": null}}', "the entry for np='2' is malformed"),
    ('{"version": 1, "calibrations": {"2": {"size": 2}}}', "malformed (KeyError"),
    ('{"version": 1, "calibrations": {"2": {"size": "two"}}}', "malformed"),
    ('{"version": 1, "calibrations": {"2": {"size": 2, "extra": 1}}}', "unknown keys ['extra']"),
    (json.dumps({"version": 1, "calibrations": {"2": {**DEFAULT_CALIBRATION.as_json(),
                                                      "measured": [1]}}}),
     "measured must be an object"),
    ("[" * 100_000 + "]" * 100_000, "RecursionError"),  # escaped as RecursionError
])
def test_malformed_tuning_file_is_a_value_error_naming_the_file(tmp_path, content, said):
    """Valid JSON of the wrong shape used to escape as AttributeError/TypeError/KeyError
    (and, uncaught at init, ended the job through MPI_Abort)."""
    path = tmp_path / "tuning.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=str(path)) as info:
        read_tuning(path)
    assert said in str(info.value)


def test_a_number_beyond_float_is_malformed(tmp_path):
    """A 400-digit integer for a constant escaped as OverflowError (and init hung on the
    other ranks)."""
    entry = {**DEFAULT_CALIBRATION.as_json(), "gamma": 10 ** 400}
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps({"version": 1, "calibrations": {"2": entry}}))
    with pytest.raises(ValueError, match="malformed .OverflowError"):
        read_tuning(path)


def test_malformed_constants_are_refused():
    entry = DEFAULT_CALIBRATION.as_json()
    for key, bad in (("gamma", float("nan")), ("call_overhead", -1.0), ("copy_beta", float("inf"))):
        with pytest.raises(ValueError, match="finite and >= 0"):
            Calibration.from_json({**entry, key: bad})


def test_writer_does_not_follow_a_planted_symlink(tmp_path):
    path = tmp_path / "tuning.json"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "tuning.json.tmp").symlink_to(victim)
    write_calibration(DEFAULT_CALIBRATION, path)
    assert victim.read_text() == "keep me"
    assert read_tuning(path)[0] == DEFAULT_CALIBRATION
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuning.json", "tuning.json.tmp",
                                                           "victim.txt"]


def test_only_rank_0_reads_the_tuning_file(tmp_path, monkeypatch):
    """A bad file on another rank is never read: its calibration would not be used."""
    path = tmp_path / "tuning.json"
    path.write_text("[not, json")
    monkeypatch.setenv("COLLECTIVES_TUNING_FILE", str(path))

    class SecondRank:
        rank = 1

        def allgather_object(self, obj):
            return [(DEFAULT_CALIBRATION, "rank 0's"), obj]

    assert Tuner.agreed(SecondRank(), Topology.from_local_size(2, 2)).source == "rank 0's"


def test_auto_compression_pays_only_on_slow_links():
    """fp16 halves the bytes on the wire and costs codec passes: worth it over a 1 Gbit
    link between nodes at 16 MiB, never on one node's shared memory or for small calls."""
    shm = LinkModel.from_bandwidth(alpha_us=5, gbytes_per_s=10, cpu_copy=True)
    slow = LinkModel.from_bandwidth(alpha_us=60, gbytes_per_s=0.117, per_node=True)
    lab = Tuner(ClusterModel.uniform(nodes=2, ranks_per_node=2, intra=shm, inter=slow,
                                     gamma=1 / 3e9))
    one_node = Tuner(ClusterModel.uniform(nodes=1, ranks_per_node=4, intra=shm, inter=shm,
                                          gamma=1 / 3e9))
    assert lab.compression(16 << 20, "auto").compression == "fp16"
    assert lab.compression(16 << 20, "ring") == Wire("ring", "fp16")
    assert lab.compression(16 << 20, "native") == Wire("native")
    assert lab.compression(1 << 10, "auto").compression is None
    for size in (8, 1 << 10, 1 << 20, 64 << 20):
        assert one_node.compression(size, "auto").compression is None


def test_compression_between_nodes_is_priced_on_several_nodes():
    """hierarchical with fp16 between nodes only: its nodes' stages keep 32 bits, so it
    saves the inter-node half and pays no codec on fast links; priced below hierarchical
    uncompressed on slow links between nodes, offered only where there are nodes."""
    shm = LinkModel.from_bandwidth(alpha_us=5, gbytes_per_s=10, cpu_copy=True)
    slow = LinkModel.from_bandwidth(alpha_us=60, gbytes_per_s=0.117, per_node=True)
    lab = Tuner(ClusterModel.uniform(nodes=2, ranks_per_node=4, intra=shm, inter=slow,
                                     gamma=1 / 3e9))
    n = 64 << 20
    between = lab.predict_between_nodes(n, "hierarchical")
    assert between < 0.75 * lab.predict(n)["hierarchical"]
    assert lab.compression(n, "hierarchical").compression == "fp16"
    one_node = Tuner(ClusterModel.uniform(nodes=1, ranks_per_node=4, intra=shm, inter=shm,
                                          gamma=1 / 3e9))
    assert not one_node.compression(n, "hierarchical").between_nodes


def test_rank_0_answers_whatever_its_read_raised(monkeypatch, caplog):
    """The other ranks wait for rank 0's calibration: an error other than a malformed
    file (Path.home() raises RuntimeError without a HOME or a passwd entry) must still
    give them an answer (the thirty-eighth review)."""
    monkeypatch.delenv("COLLECTIVES_TUNING_FILE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))

    with caplog.at_level(logging.WARNING, logger="collectives.tuner"):
        tuner = Tuner.agreed(_OneRank(), Topology.from_local_size(2, 2))
    assert tuner.source == "defaults (bad tuning file)"
    assert "Could not determine home directory" in caplog.text


@pytest.mark.parametrize("change, said", [
    ({"native": [[8, 1e-5], [8, 2e-5]]}, "increasing bytes"),  # a division by zero in auto
    ({"native": [[64, 1e-5], [8, 2e-5]]}, "increasing bytes"),  # priced wrong, silently
    ({"intra": {**DEFAULT_CALIBRATION.as_json()["intra"], "zero_copy": "false"}},
     "link flags must be true or false"),  # a non-empty string counted as true
    # the forty-eighth review: taken as 1 s, as a number, as both, as another size's
    ({"intra": {**DEFAULT_CALIBRATION.as_json()["intra"], "alpha": True}},
     "link alpha must be a number, got True"),
    ({"gamma": "1e-9"}, "gamma must be a number, got '1e-9'"),
    ({"intra": {**DEFAULT_CALIBRATION.as_json()["intra"], "zero_copy": True}}, "not both"),
    ({"size": 4}, "measured at np=4"),  # its native table was dropped, silently
])
def test_tables_out_of_order_and_flags_not_booleans_are_malformed(tmp_path, change, said):
    """Found by the thirty-eighth review."""
    path = tmp_path / "tuning.json"
    entry = {**DEFAULT_CALIBRATION.as_json(), "size": 2, **change}
    path.write_text(json.dumps({"version": 1, "calibrations": {"2": entry}}))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*{said}"):
        read_tuning(path)


@pytest.mark.parametrize("table, rows, said", [
    ("by_size", [[]], "by_size row 0 must be [bytes, 5 numbers], got []"),  # an IndexError
    ("by_size", [[64, 1e-9]], "by_size row 0 must be [bytes, 5 numbers], got [64, 1e-09]"),
    ("by_size", [[64] + [1e-9] * 5, 7], "by_size row 1 must be [bytes, 5 numbers], got 7"),
    ("by_size", {"64": 1}, "by_size must be a list of rows, got {'64': 1}"),
    ("by_size", [[True] + [1e-9] * 5], "by_size row 0: bytes must be an integer, got True"),
    ("by_size", [[64, "1e-9"] + [1e-9] * 4],
     "by_size row 0: seconds must be a number, got '1e-9'"),
    ("native", [[]], "native row 0 must be [bytes, 1 number], got []"),
    ("native", ["ab"], "native row 0 must be [bytes, 1 number], got 'ab'"),
])
def test_a_table_row_of_another_shape_is_malformed_by_name(tmp_path, caplog, monkeypatch,
                                                           table, rows, said):
    """`"by_size": [[]]` raised IndexError, which escaped the malformed-entry refusal: the
    library warned "list index out of range" naming no file, and collectives-report gave a
    traceback (the fifty-third review)."""
    path = tmp_path / "tuning.json"
    entry = {**DEFAULT_CALIBRATION.as_json(), "size": 2, table: rows}
    path.write_text(json.dumps({"version": 1, "calibrations": {"2": entry}}))
    with pytest.raises(ValueError) as info:
        read_tuning(path)
    assert f"tuning file {path}: the entry for np='2' is malformed" in str(info.value)
    assert said in str(info.value)
    monkeypatch.setenv("COLLECTIVES_TUNING_FILE", str(path))
    with caplog.at_level(logging.WARNING, logger="collectives.tuner"):
        Tuner.agreed(_OneRank(), Topology.from_local_size(2, 2))
    assert f"tuning file {path}" in caplog.text and said in caplog.text


@pytest.mark.parametrize("key", ["-2", " 2 ", "02", "2.0"])
def test_keys_that_are_no_world_size_are_malformed(tmp_path, key):
    """The forty-eighth review: "-2" was taken as np=-2, " 2 " as 2."""
    path = tmp_path / "tuning.json"
    entry = {**DEFAULT_CALIBRATION.as_json(), "size": 2}
    path.write_text(json.dumps({"version": 1, "calibrations": {key: entry}}))
    with pytest.raises(ValueError, match="the key must be a world size"):
        read_tuning(path)


@pytest.mark.parametrize("version", ["true", "1.0"])
def test_a_version_that_is_no_integer_is_refused(tmp_path, version):
    path = tmp_path / "tuning.json"
    path.write_text(f'{{"version": {version}, "calibrations": {{}}}}')
    with pytest.raises(ValueError, match="has version"):
        read_tuning(path)


def test_a_tuning_path_under_home_is_expanded(tmp_path, monkeypatch):
    """COLLECTIVES_TUNING_FILE=~/x.json read a folder named "~" (the forty-eighth review)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("COLLECTIVES_TUNING_FILE", "~/mine.json")
    assert tuning_path() == tmp_path / "mine.json"
    monkeypatch.delenv("COLLECTIVES_TUNING_FILE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME")  # and root in no passwd entry: Path.home() fails
    monkeypatch.setattr(Path, "home", lambda: (_ for _ in ()).throw(
        RuntimeError("Could not determine home directory.")))
    with pytest.raises(ValueError, match="the default tuning file .* set "
                                         "COLLECTIVES_TUNING_FILE to a path without '~' or "
                                         "XDG_CACHE_HOME"):
        tuning_path()


def test_the_cache_folder_is_xdg_cache_home_where_it_is_absolute(tmp_path, monkeypatch):
    """A relative XDG_CACHE_HOME put the tuning file under the current folder ("rel/...",
    " /..."; the ninety-second review): the XDG spec says to ignore it."""
    monkeypatch.delenv("COLLECTIVES_TUNING_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for xdg, folder in ((str(tmp_path / "xdg"), tmp_path / "xdg"),
                        ("rel", tmp_path / "home" / ".cache"), (" ", tmp_path / "home" / ".cache"),
                        ("", tmp_path / "home" / ".cache")):
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        assert tuning_path() == folder / "collectives" / "tuning.json", xdg


_WRITER = """
import sys, time
from dataclasses import replace
from collectives.costmodel import DEFAULT_CALIBRATION, write_calibration
path, size, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while time.time() < start:
    pass
write_calibration(replace(DEFAULT_CALIBRATION, size=size), path)
"""


def test_calibrations_written_at_once_all_stay(tmp_path):
    """Each writer read, changed and replaced the file: writers at the same instant lost
    one another's entries (7 of 10 trials, the thirty-eighth review)."""
    for trial in range(4):
        path = tmp_path / f"tuning{trial}.json"
        start = time.time() + 1.0
        writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(size),
                                     str(start)]) for size in (2, 3, 4, 5)]
        assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]
        assert sorted(read_tuning(path)) == [2, 3, 4, 5], trial


def test_the_tuning_file_gets_the_umask_s_permissions(tmp_path):
    """It was 0600 whatever the umask (the temporary file's mode)."""
    path = tmp_path / "tuning.json"
    old = os.umask(0o022)
    try:
        write_calibration(DEFAULT_CALIBRATION, path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_rewritten_file_keeps_its_own_permissions(tmp_path):
    """A private (0600) results or tuning file became 0644 when rewritten; a plain open
    keeps an existing file's mode (the sixty-ninth review)."""
    path = tmp_path / "tuning.json"
    write_calibration(DEFAULT_CALIBRATION, path)
    path.chmod(0o600)
    write_calibration(DEFAULT_CALIBRATION, path)
    assert path.stat().st_mode & 0o777 == 0o600
    write_atomically(path, "x")
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == "x"


def test_a_write_that_fails_names_the_file_and_leaves_none(tmp_path):
    """A full disk raised "[Errno 28] No space left on device", naming no file, after a
    whole sweep or calibration (the 100th review)."""
    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError, match="No space left on device: '.*out.json'") as raised:
        write_atomically(tmp_path / "out.json", full)
    assert raised.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []

    def other(handle):  # no errno (Pillow's style): its text was lost (the 101st review)
        raise OSError("cannot write mode RGBA as JPEG")
    with pytest.raises(OSError, match="^cannot write mode RGBA as JPEG$"):
        write_atomically(tmp_path / "out.png", other)


def test_writing_never_sets_the_umask(tmp_path, monkeypatch):
    """Reading the umask by setting it, even for an instant, raced with other threads'
    writes: files of 0600 and the process's umask left at 077 (the fortieth review)."""
    set_to = []
    monkeypatch.setattr(os, "umask", lambda mask: set_to.append(mask) or 0o022)
    write_atomically(tmp_path / "f", "x")
    assert set_to == [] and (tmp_path / "f").read_text() == "x"


def test_a_folder_that_cannot_be_opened_is_written_unlocked(tmp_path, monkeypatch):
    """A folder of mode 0300 (writable, not readable) cannot be opened to lock it; the
    calibration was then not written at all (the fortieth review)."""
    real_open = os.open

    def refuse_folders(path, flags, *args):
        if flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse_folders)
    path = write_calibration(DEFAULT_CALIBRATION, tmp_path / "tuning.json")
    assert read_tuning(path)[0] == DEFAULT_CALIBRATION
    with pytest.raises(KeyError) as raised:  # the block's own error, chained to nothing
        with folder_locked(tmp_path):  # (it ran inside the PermissionError's handler)
            raise KeyError("the block")
    assert raised.value.__context__ is None


def test_an_unknown_umask_counts_as_the_strictest(monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError(2, "No such file or directory", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert files._umask() == 0o077
