"""bench.kernels_perf --codec: every row runs, and the tables come out whole (no timing checked);
bench.kernels_perf and bench.codec_sweep refuse what they cannot run."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kernels
from bench import codec_sweep, kernels_perf


def active_isas() -> list[str]:
    """The codec's instruction set now, as --codec runs it by default (none without a codec)."""
    return [] if kernels.cpu_backend() == "numpy" else [kernels.cpu_backend()]


def test_every_row_of_the_codec_table_runs():
    rows = kernels_perf.codec_rows(active_isas(), torch=kernels_perf._torch_present())
    steps = {(row.step, row.wire) for row in rows}
    assert steps == {("memcpy f32", ""), ("add f32", "")} | {
        (step, wire) for step in kernels_perf.CODEC_STEPS for wire in kernels_perf.WIRES
    }
    for row in rows:
        row.setup(1000)()  # set up on 1000 elements and called once


def test_codec_tables_print_every_row_and_size(capsys):
    kernels_perf.main(["--codec", "--sizes", "1K,4K", "--no-torch",
                       "-f", "1", "-b", "64M", "-e", "1M"])  # (not --codec's: not refused)
    out = capsys.readouterr().out
    gbps, per_call = out.split("## microseconds per call")
    for table in (gbps, per_call):
        lines = [line for line in table.splitlines() if re.match(r"(memcpy|add|compress|encode|decode)", line)]
        assert len(lines) == len(kernels_perf.codec_rows(active_isas(), torch=False))
        for line in lines:
            cells = [float(v) for v in line.split()[-2:]]
            assert np.isfinite(cells).all() and min(cells) > 0


@pytest.mark.parametrize("main, args, message", [
    # the fifty-third review: a pass after checking nothing ("0 differ" everywhere)
    (codec_sweep.main, ["--chunks", "0"], "argument --chunks: need an integer above 0, got '0'"),
    (codec_sweep.main, ["--chunks", "-5"], "argument --chunks: need an integer above 0"),
    (codec_sweep.main, ["--chunks", "257"], "--chunks must be at most 256 (every pattern), got 257"),
    # tracebacks where collectives-bench gives a parser error; --runs 0 a KeyError
    (kernels_perf.main, ["-f", "1"], "the step factor must be at least 2, got 1"),
    (kernels_perf.main, ["-b", "0"], "need 1 <= min bytes <= max bytes, got 0 and"),
    (kernels_perf.main, ["-b", "1M", "-e", "1K"], "need 1 <= min bytes <= max bytes, got 1048576"),
    (kernels_perf.main, ["--codec", "--runs", "0"], "argument --runs: need an integer above 0"),
    (kernels_perf.main, ["--codec", "--sizes", "0"], "argument --sizes: a size of 0 bytes"),
])
def test_bad_arguments_are_parser_errors(capsys, main, args, message):
    with pytest.raises(SystemExit) as exited:
        main([*args, "--cpu"] if main is kernels_perf.main else args)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err.splitlines()[-1], err
