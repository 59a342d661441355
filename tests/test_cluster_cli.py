"""collectives-cluster against hostile use (the twentieth review): signals to `run`, a
build killed outright, someone else's lab, records that are not records, odd arguments.
Needs root (as CI runs), except where the registry is a folder of the test's own.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bench.cluster import Lab, LabError, registry
from bench.cluster.lab import Outcome, pids_of
from tests.mpirun import ROOT
from tests.test_cluster_lab import _command, _running, _wait_for_sleepers, cli, leftovers


def _popen_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cluster.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def kept_lab():
    """A lab made by `collectives-cluster up`; removed afterwards."""
    up = cli("up", "--nodes", "2")
    assert up.returncode == 0, up
    name = up.stdout.strip()
    yield name
    cli("down", name)
    assert leftovers(name, []) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["term", "hup"])
def test_a_signal_to_run_on_a_kept_lab_ends_the_command_on_its_nodes(kept_lab, signum):
    """`timeout -s TERM 5 collectives-cluster run --lab X -- sleep 100` left mpiexec and
    both sleeps running in the lab (only a lab made for the command handled SIGTERM)."""
    run = _popen_cli("run", "--lab", kept_lab, "--", "sleep", "100")
    pids = _wait_for_sleepers(kept_lab, 2)
    run.send_signal(signum)
    time.sleep(0.005)
    run.send_signal(signum)  # (a second one aborted the cleanup of the first: review 22)
    assert run.wait(timeout=30) == 128 + signum, run.stderr.read()
    assert pids_of(kept_lab) == [] and [pid for pid in pids if _running(pid)] == []


def test_sighup_to_run_removes_the_lab_it_made():
    """SIGHUP (a closed terminal) left 4 namespaces, mpiexec and the command running."""
    run = _popen_cli("run", "--nodes", "2", "--", "sleep", "100")
    name = run.stderr.readline().split()[2].rstrip(":")
    pids = _wait_for_sleepers(name, 2)
    run.send_signal(signal.SIGHUP)
    assert run.wait(timeout=30) == 128 + signal.SIGHUP
    assert leftovers(name, pids) == []


def test_mpiexec_killed_from_outside_is_said_and_gives_128_plus_the_signal(kept_lab):
    """`down` (or kill -9) during a run: it exited 247, sys.exit(-9), without a word."""
    run = _popen_cli("run", "--lab", kept_lab, "--", "sleep", "100")
    pids = _wait_for_sleepers(kept_lab, 2)
    launcher = next(pid for pid in pids if "mpiexec" in _command(pid).split()[0])
    os.kill(launcher, signal.SIGKILL)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 137 and "mpiexec was killed by signal 9" in stderr, stderr


def test_a_build_killed_outright_leaves_a_stale_lab_not_a_healthy_one():
    """`up` killed as it built: the record said "kept until down" with nodes missing, and
    the next lab did not remove it. The record names its maker until the lab is built."""
    killed_while_building = textwrap.dedent("""
        import os, signal
        from bench.cluster import Lab, hydra
        hydra.write_launcher = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        Lab(nodes=2, keep=True)
    """)
    before = {record.name for record in registry.records()}
    proc = subprocess.run([sys.executable, "-c", killed_while_building], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    [record] = [r for r in registry.records() if r.name not in before]
    try:
        assert record.owner is not None and record.stale, record
        assert "gone: stale" in cli("status").stdout
    finally:
        assert cli("down", record.name).returncode == 0
    assert leftovers(record.name, []) == []


def test_run_without_lab_does_not_take_a_lab_another_process_made_for_itself():
    with Lab(nodes=1) as private:
        run = cli("run", "--", "true")
        assert run.returncode == 1, run
        assert "made by `up` to choose from" in run.stderr and private.name not in run.stderr


@pytest.mark.parametrize("args, said", [
    (["run", "--lab", "clab-000000", "--link", "1gbit", "--", "true"],
     "--link shapes a lab made for this command"),  # was ignored: the run went unshaped
    (["check", "--nodes", "2", "--bytes", "-5"], "need an integer above 0, got '-5'"),
    (["check", "--nodes", "2", "--bytes", "0"], "need an integer above 0"),  # default size
    (["check", "--nodes", "2", "--repeat", "0"], "need an integer above 0"),  # min() of none
    (["up", "--nodes", "2", "--link", "1" + "0" * 320 + "bit"], "too high for tc's tbf"),
])
def test_odd_arguments_are_refused_before_a_lab_is_made(args, said):
    labs_before = registry.records()
    proc = cli(*args)
    assert proc.returncode in (1, 2) and said in proc.stderr, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    assert registry.records() == labs_before


def test_without_root_run_says_what_is_missing():
    """It gave ip's own 'Operation not permitted' and exit 255."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run([*nobody, sys.executable, "-m", "bench.cluster.cli", "run", "--lab",
                           "clab-000000", "--", "true"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and "the lab needs root" in proc.stderr, proc


@pytest.mark.parametrize("text", [
    "{}", "[]", '"x"', "null", "not json", "[" * 100000 + "]" * 100000,  # RecursionError
    '{"name": "clab-abcdef", "nodes": 2, "link": "1gbit", "owner": null, "created": "x"}',
    '{"name": "clab-abcdef", "nodes": 2, "link": "1gbit", "owner": {"pid": 1}}',
    '{"name": "clab-abcdef", "nodes": -3, "link": "1gbit", "owner": null}',
    '{"name": "clab-ffffff", "nodes": 2, "link": "1gbit", "owner": null}',
])
def test_a_record_that_is_not_one_reads_as_a_stale_lab(monkeypatch, tmp_path, text):
    """Valid JSON of another shape crashed every command that lists labs (KeyError,
    TypeError, AttributeError), so none could remove the lab."""
    monkeypatch.setattr(registry, "ROOT", tmp_path)
    (tmp_path / "clab-abcdef").mkdir()
    (tmp_path / "clab-abcdef" / "lab.json").write_text(text)
    [record] = registry.records()
    assert record.name == "clab-abcdef" and record.stale and not record.recorded
    assert "no readable record: stale" in record.describe()
    registry.remove("clab-abcdef")
    assert list(tmp_path.iterdir()) == []


def test_a_record_that_is_a_fifo_reads_as_a_stale_lab_at_once(monkeypatch, tmp_path):
    """A FIFO as lab.json blocked `status`, `down` and `run` for good (the thirty-eighth
    review)."""
    monkeypatch.setattr(registry, "ROOT", tmp_path)
    (tmp_path / "clab-abcdef").mkdir()
    os.mkfifo(tmp_path / "clab-abcdef" / "lab.json")
    start = time.monotonic()
    assert registry.load("clab-abcdef") is None
    assert time.monotonic() - start < 5


def test_a_newer_record_with_more_fields_is_read(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "ROOT", tmp_path)
    record = registry.Record(name="clab-abcdef", nodes=2, link="1gbit", owner=None,
                             created=1.5e9)
    registry.save(record)
    saved = tmp_path / "clab-abcdef" / "lab.json"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "gpus": 8}))
    assert registry.records() == [record]


@pytest.mark.parametrize("entry", ["symlink", "file"])
def test_an_entry_rmtree_cannot_remove_is_removed_or_named(monkeypatch, tmp_path, entry):
    """rmtree(ignore_errors=True) said "removed" and left a symlink or a file there."""
    monkeypatch.setattr(registry, "ROOT", tmp_path / "registry")
    registry.ROOT.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    path = registry.ROOT / "clab-abcdef"
    path.symlink_to(target) if entry == "symlink" else path.write_text("x")
    registry.remove("clab-abcdef")
    assert list(registry.ROOT.iterdir()) == [] and target.is_dir()


def test_a_new_lab_folder_appears_with_its_record(monkeypatch, tmp_path):
    """save() made the folder, then the record: another process listing labs in between
    took the folder for a stale lab and removed it (shown by forcing the window)."""
    monkeypatch.setattr(registry, "ROOT", tmp_path)
    seen = []
    real_rename = type(tmp_path).rename

    def rename_and_look(self, target):
        seen.append([r.name for r in registry.records()])  # just before the folder appears
        return real_rename(self, target)

    monkeypatch.setattr(type(tmp_path), "rename", rename_and_look)
    registry.save(registry.Record(name="clab-abcdef", nodes=2, link="1gbit", owner=None))
    assert seen == [[]] and [r.name for r in registry.records()] == ["clab-abcdef"]
    assert [p.name for p in tmp_path.iterdir()] == ["clab-abcdef"]


def test_a_signal_as_a_record_is_saved_leaves_no_hidden_folder(monkeypatch, tmp_path):
    """SIGTERM between the folder's making and its rename left a `.clab-*` folder that
    nothing lists or removes (the twenty-second review)."""
    monkeypatch.setattr(registry, "ROOT", tmp_path)

    def interrupted(self, target):
        raise SystemExit(143)  # what exiting_on_signals makes of SIGTERM

    monkeypatch.setattr(type(tmp_path), "rename", interrupted)
    with pytest.raises(SystemExit):
        registry.save(registry.Record(name="clab-abcdef", nodes=2, link="1gbit", owner=None))
    assert list(tmp_path.iterdir()) == []


def test_a_killed_mpiexec_is_said_by_check_too():
    """Outcome.check() said "exited -9" for mpiexec killed by SIGKILL (twenty-fourth review)."""
    killed = Outcome(command=("mpiexec", "x"), returncode=-9, stdout="", stderr="",
                     timed_out=False, elapsed=1.0)
    assert (killed.signal, killed.exit_status) == (9, 137)
    with pytest.raises(LabError, match="mpiexec x was killed by signal 9"):
        killed.check()
