"""Under torchrun, with no MPI launcher: init() picks the torch transport and everything runs.

The workers are the mpiexec ones, unchanged: every algorithm against the NumPy reference,
point-to-point messages beside collectives, and data-parallel training against DDP.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from collectives.bootstrap import MPI_LAUNCHER_ENV, TORCHRUN_ENV, launched_by_torchrun
from tests.mpirun import ROOT
from tests.workers.timeouts import ABORT_CODE, TIMEOUT

TORCH_ENV = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}


def torchrun(np_: int, worker: str, *args: str, env: dict | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `-m tests.workers.<worker> args` on `np_` local ranks under torchrun; fail on error."""
    pytest.importorskip("torch", reason="the torch extra is not installed")
    beside = Path(sys.executable).parent / "torchrun"
    launcher = [str(beside)] if beside.exists() else [sys.executable, "-m", "torch.distributed.run"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [*launcher, "--nproc-per-node", str(np_), "--master-addr", "127.0.0.1",
               "--master-port", str(port), "-m", f"tests.workers.{worker}", *args]
    full_env = {k: v for k, v in os.environ.items() if k not in MPI_LAUNCHER_ENV}
    full_env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})})
    proc = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {proc.returncode}\n--- stdout ---\n"
                             f"{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-20000:]}")
    return proc


@pytest.mark.parametrize("env, expected", [
    (TORCH_ENV, True),
    ({**TORCH_ENV, "PMI_RANK": "0"}, False),            # mpiexec (Hydra) wins
    ({**TORCH_ENV, "OMPI_COMM_WORLD_RANK": "0"}, False),
    ({"RANK": "0", "WORLD_SIZE": "2"}, False),          # no rendezvous address
    ({}, False),
])
def test_launcher_detection(monkeypatch, env, expected):
    for key in (*MPI_LAUNCHER_ENV, *TORCHRUN_ENV):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launched_by_torchrun() is expected


_BAD_LAUNCH = [({"RANK": "x"}, "RANK='x' is not an integer"),
               ({"MASTER_PORT": "abc"}, "MASTER_PORT='abc' is not an integer"),
               ({"RANK": "5", "WORLD_SIZE": "1"}, "RANK=5 is not a rank of WORLD_SIZE=1"),
               ({"RANK": "-1"}, "RANK=-1 is not a rank of WORLD_SIZE=2"),
               ({"MASTER_PORT": "70000"}, "MASTER_PORT=70000 is not a port")]


def test_a_torchrun_environment_torch_cannot_use_is_refused_by_name():
    """RANK=x raised torch's bare "invalid literal for int()", RANK=5 with WORLD_SIZE=1
    waited out the timeout (the ninety-second review). One process tries each."""
    code = ("import json, os, sys, collectives\n"
            "for env in json.loads(sys.argv[1]):\n"
            "    os.environ.update({'WORLD_SIZE': '2', 'MASTER_PORT': '29500', **env})\n"
            "    try:\n        collectives.init(timeout=30)\n"
            "    except ValueError as error:\n        print(error)\n"
            "    os.environ.update(RANK='0')\n")
    environment = {key: value for key, value in os.environ.items()
                   if key not in MPI_LAUNCHER_ENV and not key.startswith(("PMI_", "PMIX_"))}
    environment.update({**TORCH_ENV, "PYTHONPATH": str(ROOT)})
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([e for e, _ in _BAD_LAUNCH])],
                          env=environment, capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(_BAD_LAUNCH) and all(
        line.startswith(said) for line, (_, said) in zip(lines, _BAD_LAUNCH)), proc.stdout + proc.stderr


def test_every_algorithm_over_the_torch_transport():
    proc = torchrun(2, "allreduce_matrix", "ring,native,auto,hierarchical,torus2d,halving_doubling",
                    "--layouts", "contiguous,strided,inplace", "--expect-nodes", "1,1",
                    env={"COLLECTIVES_LOCAL_SIZE": "1"})
    assert proc.stdout.count("checks passed") == 2


def test_training_matches_ddp_under_torchrun():
    proc = torchrun(2, "torch_training")
    assert proc.stdout.count("size=2, transport=torch") == 2
    assert proc.stdout.count("checks passed") == 2


@pytest.mark.parametrize("np_", [2, 3])
def test_messages_beside_collectives_under_torchrun(np_):
    """comm.isend/irecv over the torch transport (tests/test_p2p_mpi.py under mpiexec)."""
    proc = torchrun(np_, "p2p_check")
    assert proc.stdout.count("checks passed") == np_


@pytest.mark.parametrize("check, step", [("1", "timed out waiting for the agreement records"),
                                         ("0", "ring round 1/4: ")])
def test_rank_that_never_arrives_gives_collective_timeout(tmp_path, check, step):
    """As under mpiexec (tests/test_timeouts_mpi.py): bounded waits, then comm.abort()."""
    with pytest.raises(AssertionError, match=f"exited {ABORT_CODE}|exited 1"):
        torchrun(3, "timeouts", "absent", "ring", str(tmp_path), env={"COLLECTIVES_CHECK": check},
                 timeout=120)
    for rank in range(2):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["error"] == "CollectiveTimeout", seen
        assert seen["elapsed"] <= TIMEOUT + 5, seen  # (a hang would take far longer)
        assert f"rank {rank}: " in seen["message"] and step in seen["message"], seen
        assert check == "1" or "[2]" in seen["message"], seen  # plans name the silent peer
        assert "this communicator is unusable since allreduce #2 timed out" in seen["after"], seen


@pytest.mark.parametrize("check, closed", [("0", "rank 0 closed the connection"),
                                           ("1", "the peer closed the connection")])
def test_a_rank_that_comes_after_the_others_gave_up_is_told_so(tmp_path, check, closed):
    """With the check off it got gloo's bare RuntimeError ("Connection closed by peer"),
    naming neither the collective nor the cause, which `except CollectiveError` did not
    catch (the 107th review); with it on, a CollectiveError naming no collective (the
    111th). The rank that gave up, sending after, got gloo's "Application timeout caused
    pair closure" (the 116th)."""
    from tests.workers.timeouts import TIMEOUT

    torchrun(2, "timeouts", "late", "ring", str(tmp_path), env={"COLLECTIVES_CHECK": check},
             timeout=120)
    first, late = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert first["error"] == "CollectiveTimeout", first
    assert "this communicator is unusable" in first["send after"], first
    assert late["error"] == "PeerError" and late["elapsed"] < TIMEOUT, late
    assert late["message"].startswith("allreduce #2 ") and closed in late["message"], late


def _one_rank(code: str) -> subprocess.CompletedProcess:
    """`python -c code` as the one rank of torchrun's environment."""
    pytest.importorskip("torch", reason="the torch extra is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in MPI_LAUNCHER_ENV}
    env.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port), "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_close_after_the_application_started_torch_distributed_again():
    """close() raised torch's ValueError "Invalid process group specified": the application's
    destroy_process_group() had taken our group (the seventy-ninth review)."""
    proc = _one_rank("import collectives, torch.distributed as dist\n"
                     "comm = collectives.init()\n"
                     "dist.destroy_process_group()\n"
                     "dist.init_process_group('gloo')\n"
                     "comm.close()\n"
                     "print('closed')")
    assert proc.returncode == 0 and proc.stdout.split() == ["closed"], proc.stdout + proc.stderr


@pytest.mark.parametrize("transport", ["mpi", "auto"])
def test_init_under_torchrun_takes_each_transport(transport):
    """One process in torchrun's environment: transport "auto" (no NCCL here: none for CuPy
    arrays) broke with a TypeError once (the fortieth review)."""
    proc = _one_rank(f"import collectives; comm = collectives.init(transport={transport!r}); "
                     "print(comm.transport_name, comm.size)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["torch", "1"]


@pytest.mark.parametrize("case", ["local_size", "invalid_timeout", "absent"])
def test_init_under_torchrun_compares_the_ranks_settings(tmp_path, case):
    """As under mpiexec (tests/test_init_mpi.py): settings that differ or are bad on one
    rank are a MismatchError at init, a rank that never calls init a CollectiveTimeout.
    init() had compared nothing under torchrun: the first call waited out the timeout, a
    local_size on one rank only broke a gather with a TypeError, a bad value there left the
    others in torch's DistStoreError (the seventy-fifth and seventy-seventh reviews)."""
    torchrun(3, "init_settings", case, str(tmp_path), timeout=120)
    *others, last = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    for seen in others:
        expected = "CollectiveTimeout" if case == "absent" else "MismatchError"
        assert seen["error"] == expected and seen["elapsed"] < 3 + 5, seen
        said = {"absent": "init: rank ", "invalid_timeout": "rank 2 rejected its settings",
                "local_size": "rank 2 has local_size 1"}
        assert said[case] in seen["message"], seen
    assert last["error"] == {"absent": None, "invalid_timeout": "ValueError"}.get(
        case, "MismatchError"), last


def test_init_close_cycles_under_torchrun_release_their_groups(tmp_path):
    """Each cycle kept its gloo group (5 descriptors, 3 threads and its buffers) until exit:
    about 200 cycles ran out of descriptors (the seventy-fifth review); so did each refused
    init (the seventy-ninth)."""
    from tests.workers.init_settings import CYCLES

    torchrun(2, "init_settings", "cycles", str(tmp_path), timeout=180)
    for rank in range(2):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        first, last = seen["descriptors"]
        assert last - first < CYCLES // 4, (rank, first, last)


def test_an_interrupt_lands_at_once_under_torchrun(tmp_path):
    """A signal handler that raised while a collective waited for a late rank was held in
    gloo's wait until the rank came or the timeout (the seventy-fifth review); now raised at
    once (the check on: the wait is for the records). The late rank finds the connections
    closed: a PeerError at once (a bare CollectiveError until the 111th review), while the interrupted rank lives (the seventy-ninth
    review saw it wait out its timeout: the expired wait had closed nothing)."""
    from tests.workers.timeouts import TIMEOUT

    from tests.workers.timeouts import INTERRUPT_AFTER

    torchrun(2, "timeouts", "interrupted", "ring", str(tmp_path), timeout=120)
    first, late = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert first["error"] == "KeyboardInterrupt", first
    assert first["elapsed"] < INTERRUPT_AFTER + 0.5, first  # (held: TIMEOUT or more)
    assert late["error"] == "PeerError" and late["elapsed"] < TIMEOUT / 2, late
