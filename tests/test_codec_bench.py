"""bench.kernels_perf --codec: every row runs, and the tables come out whole (no timing checked)."""

from __future__ import annotations

import re

import numpy as np

import kernels
from bench import kernels_perf


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
    kernels_perf.main(["--codec", "--sizes", "1K,4K", "--no-torch"])
    out = capsys.readouterr().out
    gbps, per_call = out.split("## microseconds per call")
    for table in (gbps, per_call):
        lines = [line for line in table.splitlines() if re.match(r"(memcpy|add|compress|encode|decode)", line)]
        assert len(lines) == len(kernels_perf.codec_rows(active_isas(), torch=False))
        for line in lines:
            cells = [float(v) for v in line.split()[-2:]]
            assert np.isfinite(cells).all() and min(cells) > 0
