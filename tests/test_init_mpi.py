"""init() under a real mpiexec: settings every rank must share are compared, bad values on
one rank reach every rank, and a rank that never calls init is named within the timeout."""
import json

import pytest

from tests.mpirun import ended_by_abort, run_workers
from tests.workers.init_settings import ABORT

NP = 3


def _seen(tmp_path, np_=NP) -> list[dict]:
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(np_)]


@pytest.mark.parametrize("case, field", [("local_size", "local_size"), ("shm", "shm"),
                                         ("check", "check"), ("grid", "grid"),
                                         ("cuda_aware_mpi", "cuda_aware_mpi")])
def test_settings_that_differ_raise_mismatch_on_every_rank(tmp_path, case, field):
    np_ = 2 if case == "grid" else NP
    run_workers(np_, "init_settings", case, str(tmp_path), timeout=120)
    for seen in _seen(tmp_path, np_):
        assert seen["error"] == "MismatchError", seen
        assert "ranks disagree on settings that must be equal" in seen["message"], seen
        assert f"has {field}" in seen["message"] or f"have {field}" in seen["message"], seen
        assert seen["elapsed"] < 3, seen


@pytest.mark.parametrize("case, local", [
    ("invalid_timeout", "COLLECTIVES_TIMEOUT='nan' is not a valid number of seconds"),
    ("invalid_algorithm", "unknown algorithm 'rign'"),
    ("invalid_flag", "COLLECTIVES_SHM='maybe' is not a valid flag"),
    ("invalid_long", "unknown algorithm 'éééé"),  # was a JSONDecodeError everywhere
])
def test_invalid_value_on_one_rank_reaches_every_rank(tmp_path, case, local):
    run_workers(NP, "init_settings", case, str(tmp_path), timeout=120)
    *others, last = _seen(tmp_path)
    assert last["error"] == "ValueError" and local in last["message"], last
    for seen in others:
        assert seen["error"] == "MismatchError", seen
        assert f"rank {NP - 1} rejected its settings" in seen["message"], seen
        assert local in seen["message"], seen
        assert seen["elapsed"] < 3, seen


def test_rank_that_never_calls_init_is_named_within_the_timeout(tmp_path):
    proc = run_workers(NP, "init_settings", "absent", str(tmp_path), expect_ok=False,
                       timeout=120)
    assert ended_by_abort(proc, ABORT), (proc.returncode, proc.stderr[-3000:])
    *others, absent = _seen(tmp_path)
    assert absent["error"] is None
    for seen in others:
        assert seen["error"] == "CollectiveTimeout", seen
        assert seen["elapsed"] < 3 + 2, seen
        assert "init" in seen["message"], seen


def test_communicators_init_cannot_use_are_refused_on_every_rank():
    """An inter-communicator was taken (native all-reduce gave each rank the other group's
    value; unequal groups hung init), COMM_NULL gave a raw mpi4py error (twenty-third
    review)."""
    for np_ in (2, 3):
        run_workers(np_, "init_comms", "refuse", timeout=120)


def test_init_close_cycles_keep_one_excepthook_and_the_report_of_an_uncaught_error():
    """Every init chained another excepthook: after about 1,000 cycles the report of an
    uncaught exception was lost, and each hook kept its closed transport (twenty-third
    review)."""
    from tests.workers.init_comms import CAUSE, CYCLES

    proc = run_workers(2, "init_comms", "cycles", expect_ok=False, timeout=180)
    output = f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.stdout.count(f"{CYCLES} cycles kept one hook") == 2, output
    assert proc.returncode != 0 and CAUSE in proc.stderr, output
    assert proc.stderr.count("rank 1 ends the job (MPI_Abort)") <= 1, output
