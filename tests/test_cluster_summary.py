"""bench.cluster.summary refuses, in one line and exit status 2, every run file it cannot
hold against the link bound (the fifty-third review: tracebacks, a hang on a FIFO, an empty
table with status 0, "nan (nan)" cells, a folder's --png written beside it)."""
import json
import os
import subprocess
import sys

import pytest

from tests.mpirun import ROOT

GOOD = {"environment": {"hosts": 2, "nranks": 4},
        "rows": [{"size": 1 << 20, "algorithm": "ring", "busbw": 0.094}]}


def _summary(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cluster.summary", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=60)


def _with(**changes) -> str:
    return json.dumps({**GOOD, **changes})


def _row(**changes) -> str:
    return _with(rows=[{**GOOD["rows"][0], **changes}])


@pytest.mark.parametrize("text, message", [
    (json.dumps(GOOD)[:40], "run.json: not JSON (Expecting"),
    (json.dumps({"environment": GOOD["environment"]}), "run.json: no 'rows' (a list)"),
    (json.dumps({"rows": GOOD["rows"]}), "run.json: no 'environment' (an object)"),
    ("[]", "run.json: no 'environment' (an object)"),
    (_with(environment={"hosts": "2", "nranks": 4}), "run.json: 'environment' has no 'hosts' (an integer)"),
    (_with(environment={"hosts": 1, "nranks": 2}), "run.json: ran on one host"),
    (_with(environment={"hosts": 3, "nranks": 2}), "run.json: 2 ranks on 3 hosts"),
    (_with(rows=[]), "run.json: no rows: the run measured nothing"),
    (_with(rows=[7]), "run.json: row 0 has no 'size' (an integer)"),
    (_row(algorithm=None), "run.json: row 0 has no 'algorithm' (a string)"),
    (_row(busbw=True), "run.json: row 0 has no 'busbw' (a number)"),
    (_row(busbw=float("nan")), "run.json: row 0: busbw nan GB/s is not a finite number >= 0"),
    (_row(busbw=-1), "run.json: row 0: busbw -1.0 GB/s is not a finite number >= 0"),
    (_row(busbw=10 ** 400), "run.json: row 0: busbw inf GB/s is not a finite number >= 0"),
    (_row(size=0), "run.json: row 0: a size of 0 bytes"),
    (_with(rows=GOOD["rows"] * 2), "run.json: row 1: ring at 1 MiB again"),
    (b"\xff", "run.json: 'utf-8' codec can't decode"),
])
def test_a_run_it_cannot_use_is_refused_by_name(tmp_path, text, message):
    run = tmp_path / "run.json"
    (run.write_bytes if isinstance(text, bytes) else run.write_text)(text)
    _refused(_summary(str(run), "--link", "1gbit"), message)


def test_what_is_no_run_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # (read_text waited for a writer forever)
    _refused(_summary(str(fifo), "--link", "1gbit"), "fifo.json: not a regular file")
    _refused(_summary(str(tmp_path), "--link", "1gbit"), f"{tmp_path}: not a regular file")
    _refused(_summary(str(tmp_path / "none.json"), "--link", "1gbit"),
             "none.json: No such file or directory")


def test_bad_options_are_refused(tmp_path):
    run = tmp_path / "run.json"
    run.write_text(json.dumps(GOOD))
    _refused(_summary(str(run), "--link", "bogus"), "argument --link: link rate 'bogus' is not")
    _refused(_summary(str(run), "--link", "none"), "--link must be a rate")
    _refused(_summary(str(run), "--link", "1gbit", "--png", str(tmp_path)),
             f"--png: cannot write {tmp_path}: a folder")
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name)) \
        == [tmp_path.name]  # (the folder's plot went to FOLDER.png)
    empty = tmp_path / "empty.json"
    empty.write_text(_with(rows=[]))
    _refused(_summary(str(empty), "--link", "1gbit", "--png", str(tmp_path / "x.png")),
             "no rows")  # (printed an empty table, then a ZeroDivisionError)


def test_the_plot_goes_where_png_says(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run.json"
    run.write_text(json.dumps(GOOD))
    proc = _summary(str(run), "--link", "1gbit", "--png", str(tmp_path / "bars"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bars").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars", "run.json"]
    victim, link = tmp_path / "victim.png", tmp_path / "link.png"  # (savefig followed it)
    victim.write_text("keep me")
    link.symlink_to(victim)
    assert _summary(str(run), "--link", "1gbit", "--png", str(link)).returncode == 0
    assert victim.read_text() == "keep me" and link.read_bytes()[:4] == b"\x89PNG"


def _refused(proc: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2 and one line of error, the last, naming `message`; nothing printed."""
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert message in errors[0] and errors[0] == proc.stderr.splitlines()[-1], proc.stderr
    assert proc.stdout == "", proc.stdout
